// Package formatter renders image lists, histories, disk usage and inspect
// output as Docker's CLI does: the same table layout (a tabwriter with
// Docker's padding), the same --format Go templates with the same functions
// and field names, and `--format json`.
//
// Docker's own formatter (github.com/docker/cli/cli/command/formatter) is not
// importable as a library: it is an +incompatible module that drags in the
// Docker Engine API and its types. This package reimplements its rules over
// Strata's proto messages; the golden tests hold it to Docker's output.
package formatter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"
	"unicode"
)

// Format is a --format value: "table", "table TEMPLATE", "json", or a
// TEMPLATE rendered once per element.
type Format string

// The format keys Docker accepts besides templates.
const (
	TableFormatKey = "table"
	JSONFormatKey  = "json"

	// QuietFormat is what -q prints: one ID per line.
	QuietFormat Format = "{{.ID}}"
)

// IsTable reports whether the format prints a table with a header.
func (f Format) IsTable() bool { return strings.HasPrefix(string(f), TableFormatKey) }

// IsJSON reports whether the format is "json": one JSON object per element.
func (f Format) IsJSON() bool { return string(f) == JSONFormatKey }

// Contains reports whether the format mentions sub.
func (f Format) Contains(sub string) bool { return strings.Contains(string(f), sub) }

// Context says where and how to render.
type Context struct {
	// Output receives the rendering.
	Output io.Writer
	// Format is the --format value.
	Format Format
	// Trunc shortens IDs to 12 hex digits and long commands to Docker's width.
	Trunc bool
	// Now is the clock ages ("2 days ago") are measured against; time.Now
	// when nil.
	Now func() time.Time
	// Location is the zone absolute times are shown in; time.Local when nil.
	Location *time.Location
}

func (c Context) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c Context) location() *time.Location {
	if c.Location != nil {
		return c.Location
	}
	return time.Local
}

// write renders elements with the context's format. header maps each field
// name to its column title, for tables.
func (c Context) write(header map[string]string, elements func(emit func(any) error) error) error {
	tmpl, err := parse(c.templateText())
	if err != nil {
		return err
	}
	var body bytes.Buffer
	err = elements(func(e any) error {
		if err := tmpl.Execute(&body, e); err != nil {
			return fmt.Errorf("template parsing error: %w", err)
		}
		body.WriteByte('\n')
		return nil
	})
	if err != nil {
		return err
	}
	if !c.Format.IsTable() {
		_, err := body.WriteTo(c.Output)
		return err
	}
	// Docker's table writer: minimum width 10, padding 3, spaces.
	tw := tabwriter.NewWriter(c.Output, 10, 1, 3, ' ', 0)
	if err := tmpl.Funcs(headerFuncs).Execute(tw, header); err != nil {
		return fmt.Errorf("template parsing error: %w", err)
	}
	if _, err := tw.Write([]byte("\n")); err != nil {
		return err
	}
	if _, err := body.WriteTo(tw); err != nil {
		return err
	}
	return tw.Flush()
}

// templateText turns a --format value into the template run per element.
func (c Context) templateText() string {
	text := string(c.Format)
	switch {
	case c.Format.IsTable():
		text = text[len(TableFormatKey):]
	case c.Format.IsJSON():
		text = "{{json .}}"
	}
	text = strings.Trim(text, " ")
	return strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(text)
}

// Parse parses a --format template with the functions Docker's templates
// have: json, split, join, title, lower, upper, pad, truncate.
func Parse(text string) (*template.Template, error) { return parse(text) }

func parse(text string) (*template.Template, error) {
	tmpl, err := template.New("").Funcs(basicFuncs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template parsing error: %w", err)
	}
	return tmpl, nil
}

var basicFuncs = template.FuncMap{
	"json": func(v any) string {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(v)
		return strings.TrimSpace(buf.String())
	},
	"split": strings.Split,
	"join":  strings.Join,
	"title": title,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"pad": func(s string, prefix, suffix int) string {
		if s == "" {
			return s
		}
		return strings.Repeat(" ", prefix) + s + strings.Repeat(" ", suffix)
	},
	"truncate": func(s string, n int) string {
		if len(s) < n {
			return s
		}
		return s[:n]
	},
}

// headerFuncs replace the functions that would mangle a column title when
// the row template runs over the header; pad stays, to keep alignment.
var headerFuncs = template.FuncMap{
	"json":     func(v string) string { return v },
	"split":    func(v string, _ string) string { return v },
	"join":     func(v string, _ string) string { return v },
	"title":    func(v string) string { return v },
	"lower":    func(v string) string { return v },
	"upper":    func(v string) string { return v },
	"truncate": func(v string, _ int) string { return v },
}

// title upper-cases the first letter of each word, as the deprecated
// strings.Title that Docker's templates use does for ASCII.
func title(s string) string {
	prev := ' '
	return strings.Map(func(r rune) rune {
		isSep := unicode.IsSpace(prev) || unicode.IsPunct(prev)
		prev = r
		if isSep {
			return unicode.ToTitle(r)
		}
		return r
	}, s)
}

// marshalFields marshals an element as Docker's formatter does for
// `{{json .}}`: an object of every exported method without arguments and with
// one result, keyed by the method's name.
func marshalFields(x any) ([]byte, error) {
	v := reflect.ValueOf(x)
	t := v.Type()
	m := map[string]any{}
	for i := 0; i < v.NumMethod(); i++ {
		method := t.Method(i)
		fn := v.Method(i)
		if fn.Type().NumIn() != 0 || fn.Type().NumOut() != 1 {
			continue
		}
		m[method.Name] = fn.Call(nil)[0].Interface()
	}
	return json.Marshal(m)
}

// TruncateID shortens an image ID as Docker does: no algorithm prefix, 12
// hex digits. Other strings, such as "<missing>", pass unchanged.
func TruncateID(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		id = id[i+1:]
	}
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// Ellipsis shortens s to max runes, the last one being "…", as Docker's
// history does for the CREATED BY column.
func Ellipsis(s string, max int) string {
	rs := []rune(s)
	if len(rs) <= max {
		return s
	}
	if max <= 1 {
		return string(rs[:max])
	}
	return string(rs[:max-1]) + "…"
}
