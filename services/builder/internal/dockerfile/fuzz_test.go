package dockerfile

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/strata-build/strata/lib/errdefs"
)

// lineRef is how an error names the line at fault.
var lineRef = regexp.MustCompile(`^Dockerfile:(\d+): `)

// FuzzParse feeds Dockerfiles through everything the builder does with one
// before it runs a step: parsing, meta args, the stages a target needs, and
// the dispatch of every instruction. A Dockerfile is the builder's most
// hostile input: whatever it holds, the result is a Dockerfile or an
// INVALID_ARGUMENT error naming a line of it, within seconds, never a
// panic or an error the gRPC layer would report as internal.
func FuzzParse(f *testing.F) {
	golden, err := filepath.Glob("testdata/*.Dockerfile")
	if err != nil || len(golden) == 0 {
		f.Fatalf("no testdata: %v", err)
	}
	for _, name := range golden {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		lines := bytes.Count(src, []byte("\n")) + 1
		check := func(what string, err error) {
			t.Helper()
			if err == nil {
				return
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("%s: %v (%T), want INVALID_ARGUMENT", what, err, err)
			}
			if m := lineRef.FindStringSubmatch(err.Error()); m != nil {
				if n, _ := strconv.Atoi(m[1]); n < 1 || n > lines {
					t.Fatalf("%s: %q names line %d of %d", what, err, n, lines)
				}
			}
		}
		var err error
		within(t, 10*time.Second, func() { err = dispatch(src, io.Discard) })
		check("dispatch", err)

		df, err := Parse(src)
		if err != nil {
			return
		}
		// The instruction limit bounds planning through the file size only
		// if every instruction takes a line of its own.
		if n := df.Instructions(); n > lines {
			t.Fatalf("%d instructions in %d lines", n, lines)
		}
		args := NewBuildArgs(nil)
		if err := df.DeclareMetaArgs(args, ""); err != nil {
			check("DeclareMetaArgs", err)
			return
		}
		_, err = df.Needed(len(df.Stages)-1, args)
		check("Needed", err)
	})
}

// within fails the test when fn takes longer than d: a hostile input must
// not stall the builder. d is generous: EXPOSE 0-65535 takes 0.1 s, and
// the race detector and a loaded machine make that seconds.
func within(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %v", d)
	}
}

// FuzzExpand checks the bound expandWord puts on a word before the shell
// lexer expands it: a Dockerfile must not be able to make one word grow
// past what the bound promised (and so past MaxExpansion), whatever the
// word and the value of the variables it names.
func FuzzExpand(f *testing.F) {
	for _, word := range []string{
		"$A", "${A}", "pre-${A}-post", "$A$A$B", `"$A" '$A' \$A`,
		"${A:-default}", "${A-x}", "${A:+set}", "${B+$A}", "${A:?}", "${A?must be set}",
		"${A#*/}", "${A##*/}", "${A%.*}", "${A%%.*}",
		"${A/x/y}", "${A//x/y}", "${A/#x/y}", "${A/%x/y}", `${A//\//\\/}`, "${A//./$B}", "${A/#/$PATH:}",
		"${0:+0}", "${", "$", "${}", "${A", "${A:}",
		"/usr/local/bin:$PATH", "${PATH}:/opt/bin",
	} {
		f.Add(word, "some/path.tar.gz", false)
	}
	f.Add("`${A}", "x", true)
	f.Fuzz(func(t *testing.T, word, value string, backtick bool) {
		escape := '\\'
		if backtick {
			escape = '`'
		}
		env := []string{DefaultPathEnv, "A=" + value, "B=b"}
		var out string
		var err error
		within(t, 10*time.Second, func() { out, err = expandWord(shell.NewLex(escape), word, env) })
		if err != nil {
			return
		}
		if bound := expansionBound(word, env); len(out) > bound {
			t.Fatalf("expanding %q with A=%q made %d bytes, over its bound of %d", word, value, len(out), bound)
		}
	})
}
