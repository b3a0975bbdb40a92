// Package flagenv gives every command-line flag of Strata's services an
// environment twin: --metrics-addr can also be set as STRATA_METRICS_ADDR. A
// flag given on the command line wins over its twin.
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// Prefix starts the name of every environment twin.
const Prefix = "STRATA_"

// ExitCode is the exit status of a binary whose flags or their values are bad.
const ExitCode = 2

// EnvName returns the environment twin of a flag: "metrics-addr" →
// "STRATA_METRICS_ADDR".
func EnvName(flagName string) string {
	return Prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Set is a flag set whose flags also read their environment twins.
type Set struct {
	*flag.FlagSet
	fromEnv map[string]bool
	lookup  func(string) (string, bool)
}

// New returns an empty flag set for the named binary. Parse errors are
// returned, never exited on.
func New(name string) *Set {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	s := &Set{FlagSet: fs, fromEnv: map[string]bool{}, lookup: os.LookupEnv}
	fs.Usage = func() { s.PrintUsage(fs.Output()) }
	return s
}

// SetLookup replaces os.LookupEnv, for tests.
func (s *Set) SetLookup(lookup func(string) (string, bool)) { s.lookup = lookup }

// Parse parses args, then sets each flag that args did not set from its
// environment twin when that is set. Errors name the flag, the variable and
// the value.
func (s *Set) Parse(args []string) error {
	if err := s.FlagSet.Parse(args); err != nil {
		return err
	}
	if s.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: %s takes flags only", s.Arg(0), s.Name())
	}
	set := map[string]bool{}
	s.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	s.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		v, ok := s.lookup(EnvName(f.Name))
		if !ok {
			return
		}
		if err := s.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("invalid value %q for %s (flag --%s): %v", v, EnvName(f.Name), f.Name, err))
			return
		}
		s.fromEnv[f.Name] = true
	})
	return errors.Join(errs...)
}

// Invalid returns an error saying that the value of a flag is wrong and why,
// naming the environment twin when that is where the value came from.
func (s *Set) Invalid(name string, reason error) error {
	f := s.Lookup(name)
	value := ""
	if f != nil {
		value = f.Value.String()
	}
	where := "--" + name
	if s.fromEnv[name] {
		where = EnvName(name) + " (flag --" + name + ")"
	}
	return fmt.Errorf("invalid value %q for %s: %v", value, where, reason)
}

// ReadableFile checks that the file a flag names, when it names one, can be
// opened, and says which flag and file it is otherwise.
func (s *Set) ReadableFile(name string) error {
	f := s.Lookup(name)
	if f == nil || f.Value.String() == "" {
		return nil
	}
	file, err := os.Open(f.Value.String())
	if err != nil {
		return s.Invalid(name, err)
	}
	return file.Close()
}

// PrintUsage writes every flag with its default and environment twin.
func (s *Set) PrintUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage of %s:\n", s.Name())
	s.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  --%s", f.Name)
		if name != "" {
			fmt.Fprintf(w, " %s", name)
		}
		fmt.Fprintf(w, "\n    \t%s", strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, " [$%s]\n", EnvName(f.Name))
	})
}
