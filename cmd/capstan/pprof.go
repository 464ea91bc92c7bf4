package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// pprofFlag is --pprof on the server commands: an opt-in profiling
// listener, off by default and refused on anything but loopback, because
// profiles expose memory contents and a CPU profile costs a core while it
// runs.
type pprofFlag struct{ addr string }

func (f *pprofFlag) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.addr, "pprof", "", "serve Go profiles (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060 (off by default)")
}

// checkPprofAddr accepts host:port where host is a loopback IP literal or
// "localhost"; an empty host would listen on every interface.
func checkPprofAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--pprof %q: want host:port: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("--pprof %q: profiles are served on loopback only (127.0.0.1, ::1 or localhost), never on %q", addr, host)
	}
	return net.JoinHostPort(host, port), nil
}

// start opens the profiling listener when the flag is set. The returned
// function closes it; it is never nil.
func (f *pprofFlag) start(log *slog.Logger) (func(), error) {
	if f.addr == "" {
		return func() {}, nil
	}
	addr, err := checkPprofAddr(f.addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	// Lock contention is what this listener is mostly for (shared locks on
	// the request path); sampling one event in 20 costs little.
	runtime.SetMutexProfileFraction(20)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("pprof listening", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
