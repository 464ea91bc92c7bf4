package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "c.json")
	os.WriteFile(cfgFile, []byte(`{"server":"http://from-file","api_key":"file-key"}`), 0o600)
	cases := []struct {
		name, flag, env, want string
	}{
		{"file only", "", "", "http://from-file"},
		{"env beats file", "", "http://from-env", "http://from-env"},
		{"flag beats env", "http://from-flag", "http://from-env", "http://from-flag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CAPSTAN_SERVER", tc.env)
			root := newRoot(&bytes.Buffer{}, &bytes.Buffer{})
			args := []string{"--config", cfgFile, "stats", "--app", "a"}
			if tc.flag != "" {
				args = append(args, "--server", tc.flag)
			}
			root.SetArgs(args)
			root.Execute() // fails to connect; only the resolved settings matter
			if got := apiClient().Server; got != tc.want {
				t.Fatalf("server = %q, want %q", got, tc.want)
			}
			if got := apiClient().APIKey; got != "file-key" {
				t.Fatalf("api key = %q, want the file's", got)
			}
		})
	}
	root := newRoot(&bytes.Buffer{}, &bytes.Buffer{})
	root.SetArgs([]string{"--config", filepath.Join(dir, "missing.json"), "stats", "--app", "a"})
	if err := root.Execute(); err == nil {
		t.Fatal("a missing --config file was ignored")
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	root := newRoot(&bytes.Buffer{}, &bytes.Buffer{})
	root.SetArgs([]string{"upload", "--no-such-flag"})
	err := root.Execute()
	ee, ok := err.(*exitError)
	if !ok || ee.code != 2 {
		t.Fatalf("unknown flag: %v, want exit code 2", err)
	}
}
