package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestEdgeIsNotTheOrigin: CAPSTAN_SERVER pointed at an edge answered a
// bare "origin refused (404)". The edge says who it is (Server:
// capstan-edge); the error says what to set instead.
func TestEdgeIsNotTheOrigin(t *testing.T) {
	edge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "capstan-edge")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"no such endpoint: ` + r.URL.Path + `"}`))
	}))
	defer edge.Close()
	_, err := (&Client{Server: edge.URL}).Channels(context.Background(), "com.x")
	if err == nil || !strings.Contains(err.Error(), "is an edge, not the origin API") || !strings.Contains(err.Error(), "CAPSTAN_SERVER") {
		t.Fatalf("err = %v", err)
	}
}

// TestUploadWarningsNeverNull: an upload the origin has no warning about
// printed "warnings":null in --json; the list stays a list.
func TestUploadWarningsNeverNull(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"app":"com.x","version":"1.0.0"}`))
	}))
	defer origin.Close()
	warnings := []string{}
	if _, err := (&Client{Server: origin.URL}).UploadRelease(context.Background(), Upload{App: "com.x", Version: "1.0.0", Bundle: strings.NewReader("zip"), Warnings: &warnings}); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(map[string]any{"warnings": warnings}); string(b) != `{"warnings":[]}` {
		t.Fatalf("%s", b)
	}
}
