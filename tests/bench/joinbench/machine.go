package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	zodan "github.com/zodan-project/zodan"
	"github.com/zodan-project/zodan/internal/spocktest"
)

// machine is what the numbers were measured on.
type machine struct {
	Cores     int     `json:"cores"`
	MemBytes  int64   `json:"mem_bytes"`
	CPU       string  `json:"cpu,omitempty"`
	LoadAvg   string  `json:"loadavg_at_start,omitempty"`
	Kernel    string  `json:"kernel,omitempty"`
	GoVersion string  `json:"go"`
	Zodan     string  `json:"zodan"`
	LoadAvg1  float64 `json:"-"`
}

// versions are the server's.
type versions struct {
	PostgreSQL string `json:"postgresql"`
	Spock      string `json:"spock"`
}

func probeMachine() machine {
	m := machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Zodan: zodan.Version}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(fs[1], 10, 64)
				m.MemBytes = kb * 1024
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fs := strings.Fields(string(b))
		if len(fs) >= 3 {
			m.LoadAvg = strings.Join(fs[:3], " ")
			m.LoadAvg1, _ = strconv.ParseFloat(fs[0], 64)
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func (m machine) String() string {
	s := fmt.Sprintf("%d cores, %.1f GiB memory", m.Cores, float64(m.MemBytes)/(1<<30))
	if m.CPU != "" {
		s += ", " + m.CPU
	}
	if m.LoadAvg != "" {
		s += ", load average " + m.LoadAvg + " at start"
	}
	return s
}

// probeVersions asks a node for its PostgreSQL and Spock versions.
func probeVersions(ctx context.Context, n *spocktest.Node) (versions, error) {
	var v versions
	var err error
	if v.PostgreSQL, err = spocktest.QueryValue[string](ctx, n, `SHOW server_version`); err != nil {
		return v, err
	}
	if v.Spock, err = spocktest.QueryValue[string](ctx, n, `SELECT spock.spock_version()`); err == nil {
		return v, nil
	}
	v.Spock, err = spocktest.QueryValue[string](ctx, n, `SELECT extversion FROM pg_extension WHERE extname = 'spock'`)
	return v, err
}
