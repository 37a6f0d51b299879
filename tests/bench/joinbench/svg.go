package main

import (
	"cmp"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
)

// writeSVG draws add_node's median time against rows, one line per
// cluster size and load, beside the pg_dump|psql reference: a small
// hand-written SVG, no dependencies.
func writeSVG(w io.Writer, rep report) {
	const (
		width, height            = 800.0, 440.0
		left, right, top, bottom = 64.0, 250.0, 44.0, 52.0
		plotW, plotH             = width - left - right, height - top - bottom
	)
	type point struct{ x, y float64 }
	type series struct {
		label  string
		color  string
		dash   string
		marker string
		pts    []point
	}
	var all []series
	palette := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"}
	var nodeCounts []int
	var rowsSet []int64
	for _, r := range rep.Results {
		if !slices.Contains(nodeCounts, r.Nodes) {
			nodeCounts = append(nodeCounts, r.Nodes)
		}
		if !slices.Contains(rowsSet, r.Rows) {
			rowsSet = append(rowsSet, r.Rows)
		}
	}
	slices.Sort(nodeCounts)
	slices.Sort(rowsSet)
	byKey := map[string]*series{}
	var keys []string
	for _, r := range rep.Results {
		s := r.Summary
		if math.IsNaN(float64(s.AddNodeS)) || s.Failed == s.Runs {
			continue
		}
		key := fmt.Sprintf("%d/%s", s.Nodes, s.Load)
		se, ok := byKey[key]
		if !ok {
			ci := slices.Index(nodeCounts, s.Nodes) % len(palette)
			se = &series{label: fmt.Sprintf("add_node, %d node%s, load %s", s.Nodes, plural(s.Nodes), s.Load),
				color: palette[ci], marker: "circle"}
			if s.Load != "none" {
				se.dash = "6 3"
				se.marker = "diamond"
			}
			byKey[key] = se
			keys = append(keys, key)
		}
		se.pts = append(se.pts, point{float64(s.Rows), float64(s.AddNodeS)})
	}
	for _, k := range keys {
		all = append(all, *byKey[k])
	}
	ref := series{label: "pg_dump | psql (reference)", color: "#000000", dash: "2 3", marker: "square"}
	for _, rows := range rowsSet {
		var xs []float64
		for _, r := range rep.Results {
			if r.Rows == rows {
				xs = append(xs, float64(r.Summary.RefS))
			}
		}
		if m := median(xs); !math.IsNaN(m) {
			ref.pts = append(ref.pts, point{float64(rows), m})
		}
	}
	all = append(all, ref)

	maxX, maxY := 1.0, 1.0
	for _, s := range all {
		slices.SortFunc(s.pts, func(a, b point) int { return cmp.Compare(a.x, b.x) })
		for _, p := range s.pts {
			maxX, maxY = max(maxX, p.x), max(maxY, p.y)
		}
	}
	yStep := niceStep(maxY / 5)
	maxY = math.Ceil(maxY/yStep) * yStep
	px := func(x float64) float64 { return left + x/maxX*plotW }
	py := func(y float64) float64 { return top + plotH - y/maxY*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	title := "add_node time against rows copied (median of runs)"
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%.0f" y="34" fill="#555">%s</text>`+"\n", left, html.EscapeString(fmt.Sprintf("%d cores, %.0f GiB; PostgreSQL %s, Spock %s, zodan %s",
		rep.Machine.Cores, float64(rep.Machine.MemBytes)/(1<<30), rep.Versions.PostgreSQL, rep.Versions.Spock, rep.Machine.Zodan)))
	// Axes and grid.
	for y := 0.0; y <= maxY+yStep/2; y += yStep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, py(y), left+plotW, py(y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, py(y)+4, trimFloat(y))
	}
	for _, x := range rowsSet {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", px(float64(x)), top, px(float64(x)), top+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(float64(x)), top+plotH+16, human(x))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, top+plotH, left+plotW, top+plotH)
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, top, left, top+plotH)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">rows of pgbench_accounts</text>`+"\n", left+plotW/2, height-12)
	fmt.Fprintf(&b, `<text x="16" y="%.1f" text-anchor="middle" transform="rotate(-90 16 %.1f)">seconds</text>`+"\n", top+plotH/2, top+plotH/2)
	// Series and legend.
	for i, s := range all {
		var pts []string
		for _, p := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.x), py(p.y)))
		}
		dash := ""
		if s.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, s.dash)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", s.color, dash, strings.Join(pts, " "))
		for _, p := range s.pts {
			b.WriteString(marker(s.marker, px(p.x), py(p.y), s.color))
		}
		ly := top + 10 + float64(i)*20
		lx := left + plotW + 16
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly, lx+28, ly, s.color, dash)
		b.WriteString(marker(s.marker, lx+14, ly, s.color))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+34, ly+4, html.EscapeString(s.label))
	}
	b.WriteString("</svg>\n")
	io.WriteString(w, b.String())
}

func marker(kind string, x, y float64, color string) string {
	switch kind {
	case "square":
		return fmt.Sprintf(`<rect x="%.1f" y="%.1f" width="7" height="7" fill="%s"/>`+"\n", x-3.5, y-3.5, color)
	case "diamond":
		return fmt.Sprintf(`<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f" fill="%s"/>`+"\n", x, y-5, x+5, y, x, y+5, x-5, y, color)
	}
	return fmt.Sprintf(`<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", x, y, color)
}

// niceStep rounds a raw axis step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(x float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", x), "0"), ".")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
