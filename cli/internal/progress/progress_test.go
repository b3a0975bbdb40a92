package progress

import (
	"bytes"
	"testing"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

const (
	a = "sha256:a8ba2ac8552bfb5d40deeba25d7c57d977fc4bface0ed11ed772bbbfe0bb07fc"
	b = "sha256:b5afda7cbb10879f0e2692c1d4f49206a157633deb9add173fe9da377726d43a"
)

func p(id string, action builderv1.TransferAction, current, total int64) *builderv1.TransferProgress {
	return &builderv1.TransferProgress{Id: id, Action: action, Current: current, Total: total}
}

func TestBar(t *testing.T) {
	for _, tc := range []struct {
		current, total int64
		want           string
	}{
		{0, 0, ""},
		{1500, 0, "   1.5kB"},
		{0, 2134000, "[>                                                  ]       0B/2.134MB"},
		{1067000, 2134000, "[=========================>                         ]  1.067MB/2.134MB"},
		{2134000, 2134000, "[==================================================>]  2.134MB/2.134MB"},
	} {
		if got := Bar(tc.current, tc.total); got != tc.want {
			t.Errorf("Bar(%d, %d) = %q, want %q", tc.current, tc.total, got, tc.want)
		}
	}
}

// Off a terminal, a line per change of state and none per byte count.
func TestPlainLines(t *testing.T) {
	var out bytes.Buffer
	d := New(&out, false, PullWords)
	d.Update(p(a, builderv1.TransferAction_TRANSFER_ACTION_DOWNLOADING, 1, 10))
	d.Update(p(a, builderv1.TransferAction_TRANSFER_ACTION_DOWNLOADING, 5, 10))
	d.Update(p(b, builderv1.TransferAction_TRANSFER_ACTION_EXISTS, 0, 0))
	d.Update(p(a, builderv1.TransferAction_TRANSFER_ACTION_DONE, 10, 10))
	want := "a8ba2ac8552b: Downloading\nb5afda7cbb10: Already exists\na8ba2ac8552b: Pull complete\n"
	if out.String() != want {
		t.Errorf("plain progress:\n%q\nwant\n%q", out.String(), want)
	}
}

// On a terminal, one line per blob, redrawn in place.
func TestTerminalRedrawsInPlace(t *testing.T) {
	var out bytes.Buffer
	d := New(&out, true, PushWords)
	d.Update(p(a, builderv1.TransferAction_TRANSFER_ACTION_UPLOADING, 0, 100))
	d.Update(p(b, builderv1.TransferAction_TRANSFER_ACTION_EXISTS, 0, 0))
	d.Update(p(a, builderv1.TransferAction_TRANSFER_ACTION_UPLOADING, 100, 100))
	want := "a8ba2ac8552b: Pushing [>                                                  ]       0B/100B\n" +
		"b5afda7cbb10: Layer already exists\n" +
		"\x1b[2A\r\x1b[2Ka8ba2ac8552b: Pushing [==================================================>]     100B/100B\r\x1b[2B"
	if out.String() != want {
		t.Errorf("terminal progress:\n%q\nwant\n%q", out.String(), want)
	}
}
