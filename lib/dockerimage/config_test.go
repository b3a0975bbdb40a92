package dockerimage

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
)

func TestMarshalWritesWhatDockerWrites(t *testing.T) {
	c := &Config{
		Architecture: "amd64",
		OS:           "linux",
		Created:      time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		Config:       &ContainerConfig{Env: []string{"PATH=/bin"}, Cmd: StrSlice{"sh"}},
		History:      []History{{Created: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), CreatedBy: "/bin/sh -c #(nop)  CMD [\"sh\"]", EmptyLayer: true}},
		RootFS:       RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromString("layer")}},
	}
	got, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/bin"],"Cmd":["sh"],"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},"created":"2024-01-02T03:04:05Z","history":[{"created":"2024-01-02T03:04:05Z","created_by":"/bin/sh -c #(nop)  CMD [\"sh\"]","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["` + digest.FromString("layer").String() + `"]}}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("Marshal (-want +got):\n%s", diff)
	}
}

func TestStrSliceReadsAStringOrAList(t *testing.T) {
	for in, want := range map[string]StrSlice{
		`"sh"`:          {"sh"},
		`["sh","-c"]`:   {"sh", "-c"},
		`null`:          nil,
		`["a b","c d"]`: {"a b", "c d"},
	} {
		var got StrSlice
		if err := json.Unmarshal([]byte(in), &got); err != nil || !cmp.Equal(got, want) {
			t.Errorf("Unmarshal(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	var got StrSlice
	if err := json.Unmarshal([]byte(`1`), &got); err == nil {
		t.Error("Unmarshal(1) succeeded")
	}
}

func TestCloneIsDeep(t *testing.T) {
	c := &Config{Config: &ContainerConfig{Env: []string{"A=1"}, Labels: map[string]string{"l": "v"}}}
	d := c.Clone()
	d.Config.Env[0] = "A=2"
	d.Config.Labels["l"] = "w"
	if c.Config.Env[0] != "A=1" || c.Config.Labels["l"] != "v" {
		t.Errorf("changing a clone changed the original: %+v", c.Config)
	}
}
