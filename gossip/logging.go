package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// logBridge is an io.Writer for memberlist's *log.Logger that forwards each
// line to slog at the level its "[ERR]", "[WARN]", "[INFO]" or "[DEBUG]"
// prefix names (unprefixed lines at Info).
type logBridge struct {
	l *slog.Logger
}

// newStdLogger returns a *log.Logger for memberlist that writes to l.
func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(logBridge{l}, "", 0)
}

var levelPrefixes = []struct {
	prefix []byte
	level  slog.Level
}{
	{[]byte("[ERR]"), slog.LevelError},
	{[]byte("[ERROR]"), slog.LevelError},
	{[]byte("[WARN]"), slog.LevelWarn},
	{[]byte("[INFO]"), slog.LevelInfo},
	{[]byte("[DEBUG]"), slog.LevelDebug},
	{[]byte("[TRACE]"), slog.LevelDebug},
}

// Write logs each line of p. log.Logger calls it once per record.
func (w logBridge) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		level := slog.LevelInfo
		for _, lp := range levelPrefixes {
			if bytes.HasPrefix(line, lp.prefix) {
				level = lp.level
				line = bytes.TrimSpace(line[len(lp.prefix):])
				break
			}
		}
		ctx := context.Background()
		if w.l.Enabled(ctx, level) {
			w.l.Log(ctx, level, string(line), "component", "memberlist")
		}
	}
	return len(p), nil
}
