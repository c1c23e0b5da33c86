package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// report prints the summary tables: medians over the rounds, and the
// per-round ratios' median with their range.
func report(out io.Writer, ws []*workload) {
	fmt.Fprintln(out, "| workload | no-op req/s | modelguard req/s | ratio: median (range) | server CPU per call: no-op / modelguard | CPU ratio: median (range) | limited by: no-op / modelguard | ghz CPU per call: no-op / modelguard | others' share of the server / ghz CPU |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|")
	for _, w := range ws {
		n, m := w.max[noop], w.max[mg]
		fmt.Fprintf(out, "| %s | %.0f | %.0f | %s | %s / %s | %s | %s / %s | %s / %s | %s |\n", w.name,
			median(rates(n)), median(rates(m)),
			spread(ratios(m, n, func(s sample) float64 { return s.rps })),
			us(durMedian(n, sample.cpuPerCall)), us(durMedian(m, sample.cpuPerCall)),
			// CPU per call is a cost: the no-op's over modelguard's is the
			// throughput ratio the CPU times predict.
			spread(ratios(n, m, func(s sample) float64 { return float64(s.cpuPerCall()) })),
			limits(n), limits(m), us(durMedian(n, sample.ghzPerCall)), us(durMedian(m, sample.ghzPerCall)),
			othersShare(append(slices.Clone(n), m...)))
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| at a fixed rate: half the no-op's median throughput | req/s | no-op p50 / p99 | modelguard p50 / p99 | p99 ratio: median (range) |")
	fmt.Fprintln(out, "|---|---|---|---|---|")
	var short []string
	for _, w := range ws {
		n, m := w.fixed[noop], w.fixed[mg]
		fmt.Fprintf(out, "| %s | %.0f | %s / %s | %s / %s | %s |\n", w.name, w.rate,
			ms(durMedian(n, p50)), ms(durMedian(n, p99)), ms(durMedian(m, p50)), ms(durMedian(m, p99)),
			spread(ratios(m, n, func(s sample) float64 { return float64(s.p99) })))
		for i, name := range []string{"no-op", "modelguard"} {
			if k := fellShort(w.fixed[i], w.rate); k > 0 {
				short = append(short, fmt.Sprintf("%s fell short of %.0f req/s on %q in %d of %d rounds", name, w.rate, w.name, k, len(w.fixed[i])))
			}
		}
	}
	for _, s := range short {
		fmt.Fprintln(out, "\nwarning:", s, "(its latency there is that of an overloaded server)")
	}
}

func p50(s sample) time.Duration { return s.p50 }
func p99(s sample) time.Duration { return s.p99 }

func rates(ss []sample) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.rps
	}
	return out
}

// ratios are a's value over b's, round by round.
func ratios(a, b []sample, v func(sample) float64) []float64 {
	out := make([]float64, 0, len(a))
	for i := range min(len(a), len(b)) {
		if d := v(b[i]); d > 0 {
			out = append(out, v(a[i])/d)
		}
	}
	return out
}

// median of xs (the mean of the middle two for an even count); 0 if empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func durMedian(ss []sample, v func(sample) time.Duration) time.Duration {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = float64(v(s))
	}
	return time.Duration(median(xs))
}

// spread is "median (min-max)" of ratios.
func spread(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f (%.2f-%.2f)", median(xs), slices.Min(xs), slices.Max(xs))
}

// limits counts what limited each run: "ghz 4, server 1".
func limits(ss []sample) string {
	counts := map[string]int{}
	for _, s := range ss {
		counts[s.limit()]++
	}
	var parts []string
	for _, l := range []string{"server", "ghz", "neither"} {
		if counts[l] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", l, counts[l]))
		}
	}
	return strings.Join(parts, ", ")
}

// othersShare is the median share of the server's and ghz's CPUs that
// other work took during the runs: above a few percent, the machine was
// not quiet enough for these numbers.
func othersShare(ss []sample) string {
	var srv, gz []float64
	for _, s := range ss {
		a, b := s.others()
		srv, gz = append(srv, a), append(gz, b)
	}
	return fmt.Sprintf("%.0f%% / %.0f%%", 100*median(srv), 100*median(gz))
}

// fellShort counts the runs that sent less than 97% of the fixed rate: the
// server could not keep up, or ghz could not.
func fellShort(ss []sample, rate float64) int {
	n := 0
	for _, s := range ss {
		if s.rps < 0.97*rate {
			n++
		}
	}
	return n
}
