package client

import (
	"context"
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
