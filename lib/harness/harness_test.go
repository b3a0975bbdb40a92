package harness

import (
	"context"
	"net/http"
	"os/exec"
	"testing"
)

func TestPostgresAcceptsQueries(t *testing.T) {
	pg := StartPostgres(t)
	out, err := exec.Command("psql", pg.DSN, "-Atc", "select 40+2").CombinedOutput()
	if err != nil || string(out) != "42\n" {
		t.Fatalf("psql %s: %q, %v", pg.DSN, out, err)
	}
	other := pg.CreateDatabase(t, "other")
	if out, err := exec.Command("psql", other, "-Atc", "select current_database()").CombinedOutput(); err != nil || string(out) != "other\n" {
		t.Fatalf("psql %s: %q, %v", other, out, err)
	}
}

func TestS3ServesAndRestarts(t *testing.T) {
	s3 := StartS3(t)
	get := func() error {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+s3.Endpoint+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(); err != nil {
		t.Fatalf("GET / on versitygw: %v", err)
	}
	s3.Stop()
	if err := get(); err == nil {
		t.Fatal("versitygw still answers after Stop")
	}
	s3.Start(t)
	if err := get(); err != nil {
		t.Fatalf("GET / after restart: %v", err)
	}
}
