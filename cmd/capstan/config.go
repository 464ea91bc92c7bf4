package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/capstan-ota/capstan/origin/client"
	"github.com/spf13/cobra"
)

// fileConfig is the optional configuration file of the client commands.
// Flags win over environment variables, which win over the file.
type fileConfig struct {
	Server     string `json:"server"`
	APIKey     string `json:"api_key"`
	SigningKey string `json:"signing_key"`
	// Store, Blobs and OriginKey are the shared store of `capstan origin`
	// (--store, --blobs, --origin-key).
	Store     string `json:"store,omitempty"`
	Blobs     string `json:"blobs,omitempty"`
	OriginKey string `json:"origin_key,omitempty"`
}

// globals are the settings every client command shares, resolved once per
// run from flags, environment and file.
type globals struct {
	configPath string
	server     string
	apiKey     string
	file       fileConfig
}

// defaultConfigFile is read when neither --config nor CAPSTAN_CONFIG names
// a file; it is optional.
const defaultConfigFile = ".capstan.json"

func (g *globals) bind(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "configuration file (JSON: server, api_key, signing_key, store, blobs, origin_key); default $CAPSTAN_CONFIG or ./"+defaultConfigFile+" if present")
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return g.load() }
}

// bindClient gives a command that calls the origin API its --server and
// --api-key flags.
func (g *globals) bindClient(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&g.server, "server", "", "origin API URL, or several separated by commas (origins sharing a store: tried in order) (default $CAPSTAN_SERVER, then the config file, then http://127.0.0.1:7070)")
	f.StringVar(&g.apiKey, "api-key", "", "API key (default $CAPSTAN_API_KEY, then the config file); prefer the variable in CI")
	cmd.PreRunE = func(*cobra.Command, []string) error { return g.checkServer() }
}

// checkServer refuses an origin URL that is not one (a usage mistake):
// "127.0.0.1:7070" gave a raw parse error from deep in net/url.
func (g *globals) checkServer() error {
	src, v := "--server", g.server
	switch {
	case v != "":
	case os.Getenv("CAPSTAN_SERVER") != "":
		src, v = "CAPSTAN_SERVER", os.Getenv("CAPSTAN_SERVER")
	case g.file.Server != "":
		src, v = "the config file's \"server\"", g.file.Server
	default:
		return nil
	}
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usageError("%s %q is not an origin API URL: want http(s)://HOST:PORT, e.g. http://127.0.0.1:7070", src, s)
		}
	}
	return nil
}

func (g *globals) load() error {
	path, explicit := g.configPath, g.configPath != ""
	if !explicit {
		if path = os.Getenv("CAPSTAN_CONFIG"); path != "" {
			explicit = true
		} else {
			path = defaultConfigFile
		}
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return usageError("config file: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(io.LimitReader(f, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g.file); err != nil {
		return usageError("config file %s: %w", path, err)
	}
	return nil
}

// pick returns the first non-empty of a flag, an environment variable, a
// file setting and a default.
func pick(flag, env, file, def string) string {
	for _, v := range []string{flag, os.Getenv(env), file} {
		if v != "" {
			return v
		}
	}
	return def
}

// cli holds the settings shared by the client commands of this run.
var cli globals

// apiClient is the origin API client of this run's settings.
func apiClient() *client.Client {
	return &client.Client{
		Server: pick(cli.server, "CAPSTAN_SERVER", cli.file.Server, "http://127.0.0.1:7070"),
		APIKey: pick(cli.apiKey, "CAPSTAN_API_KEY", cli.file.APIKey, ""),
	}
}

// apiKeySource says where the API key of this run came from, for error
// messages: "" when no key was given.
func apiKeySource() string {
	switch {
	case cli.apiKey != "":
		return "--api-key"
	case os.Getenv("CAPSTAN_API_KEY") != "":
		return "$CAPSTAN_API_KEY"
	case cli.file.APIKey != "":
		return "the config file"
	}
	return ""
}
