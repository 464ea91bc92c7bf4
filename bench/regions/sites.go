package regions

import (
	"fmt"
	"strings"
	"time"
)

// maxSites bounds ParseSites: a benchmark on one machine, not a planet.
const maxSites = 16

// ParseSites parses a flag value such as "eu-west=5ms,us-east=40ms" into
// sites, in order: region labels of at most 64 bytes, and round trips from
// 0 to 10 s. An empty value means DefaultSites.
func ParseSites(s string) ([]Site, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultSites(), nil
	}
	var out []Site
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, delay, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || name == "" || len(name) > 64 {
			return nil, fmt.Errorf("regions: %q: want REGION=RTT, e.g. eu-west=5ms", part)
		}
		if seen[name] {
			return nil, fmt.Errorf("regions: region %q given twice", name)
		}
		seen[name] = true
		d, err := time.ParseDuration(delay)
		if err != nil || d < 0 || d > 10*time.Second {
			return nil, fmt.Errorf("regions: %q: round trip must be a duration from 0 to 10s", part)
		}
		out = append(out, Site{Region: name, RTT: d})
		if len(out) > maxSites {
			return nil, fmt.Errorf("regions: more than %d sites", maxSites)
		}
	}
	return out, nil
}
