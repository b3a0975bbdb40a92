package dockerfile

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/strata-build/strata/lib/errdefs"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// describe dispatches every stage of a Dockerfile from an empty base with
// the build args "V=9", and writes what the classic builder would record:
// each step's history text and, at the end of each stage, the config.
func describe(src []byte) string {
	var b strings.Builder
	if err := dispatch(src, &b); err != nil {
		b.WriteString("error: " + err.Error() + "\n")
	}
	return b.String()
}

// dispatch is describe's walk through a Dockerfile, writing to w and
// stopping at the first error.
func dispatch(src []byte, w io.Writer) error {
	df, err := Parse(src)
	if err != nil {
		return err
	}
	args := NewBuildArgs(map[string]string{"V": "9"})
	if err := df.DeclareMetaArgs(args, ""); err != nil {
		return err
	}
	for i, s := range df.Stages {
		base, err := df.BaseName(i, args)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "stage %d %q from %s\n", i, s.Name, base)
		st := NewState(nil, args.ForStage(), df.EscapeToken)
		for _, cmd := range s.Commands {
			if err := st.Expand(cmd); err != nil {
				return err
			}
			var c Commit
			switch x := cmd.(type) {
			case *instructions.RunCommand:
				r, err := st.Run(x)
				if err != nil {
					return err
				}
				if r.Network != "" {
					fmt.Fprintf(w, "  (network %s)\n", r.Network)
				}
				c = r.Commit
				for _, m := range r.Secrets {
					fmt.Fprintf(w, "  mount %s\n", m.Spec())
				}
				for _, m := range r.SSH {
					fmt.Fprintf(w, "  mount %s\n", m.Spec())
				}
				for _, kv := range r.Env {
					if strings.HasPrefix(kv, "SSH_AUTH_SOCK=") {
						fmt.Fprintf(w, "  env %s\n", kv)
					}
				}
				for _, m := range r.Mounts {
					fmt.Fprintf(w, "  mount %s\n", describeMount(m))
				}
			case *instructions.WorkdirCommand:
				c, err = st.Workdir(x)
			case *instructions.CopyCommand, *instructions.AddCommand:
				fmt.Fprintf(w, "  %s\n", cmd)
				continue
			default:
				c, err = st.Apply(cmd)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "  %s\n", c.CreatedBy())
		}
		cfg, _ := json.Marshal(st.Config)
		fmt.Fprintf(w, "  config %s\n", cfg)
	}
	return nil
}

func describeMount(m *instructions.Mount) string {
	s := fmt.Sprintf("type=%s target=%s source=%s from=%q ro=%t", m.Type, m.Target, m.Source, m.From, m.ReadOnly)
	switch m.Type {
	case instructions.MountTypeCache:
		s += fmt.Sprintf(" id=%s sharing=%s", m.CacheID, m.CacheSharing)
		if m.Mode != nil {
			s += fmt.Sprintf(" mode=%o", *m.Mode)
		}
		if m.UID != nil {
			s += fmt.Sprintf(" uid=%d", *m.UID)
		}
		if m.GID != nil {
			s += fmt.Sprintf(" gid=%d", *m.GID)
		}
	case instructions.MountTypeTmpfs:
		s += fmt.Sprintf(" size=%d", m.SizeLimit)
	}
	return s
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.Dockerfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got := describe(src)
			golden := strings.TrimSuffix(f, ".Dockerfile") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", f, diff)
			}
		})
	}
}

func TestParseErrorsAreInvalidArgument(t *testing.T) {
	for name, src := range map[string]string{
		"unknown instruction":  "FROM busybox\nFOO bar\n",
		"unknown flag":         "FROM busybox\nCOPY --bogus=1 a b\n",
		"no FROM":              "RUN echo\n",
		"unterminated heredoc": "FROM busybox\nRUN <<EOF\necho\n",
		"empty":                "",
		"10 MB one line":       "FROM busybox\nRUN " + strings.Repeat("x", 10<<20),
		"long line":            "FROM busybox\nRUN " + strings.Repeat("x", 512<<10),
	} {
		_, err := Parse([]byte(src))
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: Parse = %v, want an INVALID_ARGUMENT error", name, err)
		}
	}
}

func TestArgBlowUpIsRefused(t *testing.T) {
	var src strings.Builder
	src.WriteString("FROM busybox\nARG A0=xxxxxxxxxxxxxxxx\n")
	for i := 1; i < 64; i++ {
		fmt.Fprintf(&src, "ARG A%d=${A%d}${A%d}${A%d}${A%d}\n", i, i-1, i-1, i-1, i-1)
	}
	df, err := Parse([]byte(src.String()))
	if err != nil {
		t.Fatal(err)
	}
	st := NewState(nil, NewBuildArgs(nil), df.EscapeToken)
	for _, cmd := range df.Stages[0].Commands {
		if err = st.Expand(cmd); err != nil {
			break
		}
		if _, err = st.Apply(cmd); err != nil {
			break
		}
	}
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("expanding a doubling ARG chain: err = %v, want INVALID_ARGUMENT naming the limit", err)
	}
}

// A pattern substitution puts its replacement at every match: with the
// value itself as the replacement, a 2 KiB ARG expands to 4 MiB.
func TestPatternSubstitutionBlowUpIsRefused(t *testing.T) {
	for _, inst := range []string{"ENV B=${A//?/$A}", "LABEL b=${A///$A}", "EXPOSE ${A//x/$A}"} {
		src := "FROM busybox\nARG A=" + strings.Repeat("x", 2048) + "\n" + inst + "\n"
		df, err := Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		st := NewState(nil, NewBuildArgs(nil), df.EscapeToken)
		for _, cmd := range df.Stages[0].Commands {
			if err = st.Expand(cmd); err != nil {
				break
			}
			if _, err = st.Apply(cmd); err != nil {
				break
			}
		}
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "limit") {
			t.Errorf("%s with a 2 KiB A: err = %.200v, want INVALID_ARGUMENT naming the limit", inst, err)
		}
	}
}

func TestSyntaxDirective(t *testing.T) {
	const digest = "@sha256:93bfd3b68c109427185cd78b4779fc82b484b0b7618e36d0f104d4d801e66d25"
	for _, ref := range []string{
		"docker/dockerfile:1", "docker/dockerfile:1.7", "docker/dockerfile:1.7.1",
		"docker.io/docker/dockerfile:1", "docker/dockerfile:1-labs", "docker/dockerfile:1.7-labs",
		"docker/dockerfile:1" + digest, "docker.io/docker/dockerfile:1.7.1-labs" + digest,
	} {
		for _, src := range []string{"# syntax=" + ref + "\n", "#syntax = " + ref + "\n# escape=`\n", "# check=skip=all\n# syntax=" + ref + "\n"} {
			df, err := Parse([]byte(src + "FROM busybox\n"))
			if err != nil {
				t.Errorf("Parse(%q): %v", src, err)
				continue
			}
			if df.Syntax != ref {
				t.Errorf("Parse(%q).Syntax = %q, want %q", src, df.Syntax, ref)
			}
		}
	}
	for _, ref := range []string{
		"foo/bar:1", "docker/dockerfile:2", "docker/dockerfile", "docker/dockerfile:latest", "docker/dockerfile:1.x",
		"docker/dockerfile-upstream:master", "example.com/docker/dockerfile:1", "docker/dockerfile:1@sha256:abc",
	} {
		_, err := Parse([]byte("# escape=\\\n# syntax=" + ref + "\nFROM busybox\n"))
		want := fmt.Sprintf("Dockerfile:2: the syntax directive names frontend image %q; this builder has only its own Dockerfile frontend (docker/dockerfile:1)", ref)
		if !errdefs.IsInvalidArgument(err) || err.Error() != want {
			t.Errorf("syntax=%s: Parse = %v, want INVALID_ARGUMENT %q", ref, err, want)
		}
	}
	// A comment after the first instruction is no directive.
	if _, err := Parse([]byte("FROM busybox\n# syntax=foo/bar:1\n")); err != nil {
		t.Errorf("a syntax comment after FROM: Parse = %v, want no error", err)
	}
}

// A `# check=` comment below the top of the file is a comment, not a
// directive: the instruction under it parses (BuildKit's parser, given no
// linter, crashed on it; a fuzz input found it).
func TestCheckCommentBelowTheTop(t *testing.T) {
	for _, src := range []string{
		"FROM busybox\n# check=skip=all\nRUN true\n",
		"# syntax is not first\n# check=skip=all\nFROM busybox\n",
	} {
		if _, err := Parse([]byte(src)); err != nil {
			t.Errorf("Parse(%q) = %v", src, err)
		}
	}
}
