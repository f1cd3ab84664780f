package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteDocKeepsTheProse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	prose := "# Benchmarks\n\nWhat it says.\n"
	if err := os.WriteFile(path, []byte(prose), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeDoc(path, "| a |\n"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(mustRead(t, path), "## Latest", "More prose.\n\n## Latest", 1)+"After.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeDoc(path, "| b |\n"); err != nil {
		t.Fatal(err)
	}
	got := mustRead(t, path)
	for _, want := range []string{prose, "More prose.", "| b |\n" + endMarker, "After.\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("doc lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "| a |") || strings.Count(got, beginMarker) != 1 {
		t.Errorf("the old table is still there, or twice the markers:\n%s", got)
	}

	if err := os.WriteFile(path, []byte(prose+endMarker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeDoc(path, "| c |\n"); err == nil {
		t.Error("a doc with one marker was rewritten")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMedianAndFormats(t *testing.T) {
	r := &row{samples: []sample{{"v": 3}, {"v": 1}, {"v": 2, "p50": 0.5}, {"v": 10}}}
	if v, _ := r.med("v"); v != 2.5 {
		t.Errorf("median of 1 2 3 10 = %v, want 2.5", v)
	}
	if v, ok := r.med("p50"); !ok || v != 0.5 {
		t.Errorf("median of one p50 = %v %v", v, ok)
	}
	if _, ok := r.med("p99"); ok {
		t.Error("median of nothing")
	}
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", 2.5: "2.50"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestFailedRowSaysWhy(t *testing.T) {
	res := newResults()
	res.declare(row{key: "k", name: "thing", unit: "/s"})
	res.fail("k", os.ErrDeadlineExceeded)
	if md := res.markdown(header{}); !strings.Contains(md, "| thing | - | failed: i/o timeout |") {
		t.Errorf("no failed cell:\n%s", md)
	}
}
