package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Postgres is a private PostgreSQL cluster on loopback.
type Postgres struct {
	// DSN connects as the superuser "strata" to the database "strata".
	DSN string
	// Port is the TCP port on 127.0.0.1.
	Port int
}

// pgBinDir is where Debian's postgresql package puts the server programs.
const pgBinDir = "/usr/lib/postgresql/15/bin"

// StartPostgres initialises a cluster in a temporary directory, starts it
// and creates the database "strata". As root it runs the server as the
// postgres user, since PostgreSQL refuses to run as root.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	initdb := filepath.Join(pgBinDir, "initdb")
	if _, err := os.Stat(initdb); err != nil {
		t.Fatalf("PostgreSQL server programs not found in %s: run `make deps` (apt-get install postgresql)", pgBinDir)
	}
	dir, err := os.MkdirTemp("", "strata-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	asPostgres := os.Geteuid() == 0
	if asPostgres {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) {
		t.Helper()
		var cmd *exec.Cmd
		if asPostgres {
			cmd = exec.Command("su", "postgres", "-s", "/bin/sh", "-c", shellQuote(append([]string{name}, args...)))
		} else {
			cmd = exec.Command(name, args...)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	port := FreePort(t)
	data := filepath.Join(dir, "data")
	run(initdb, "-D", data, "-A", "trust", "-U", "strata", "--no-sync")
	run(filepath.Join(pgBinDir, "pg_ctl"), "-D", data, "-w", "-l", filepath.Join(dir, "log"),
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", port, dir), "start")
	t.Cleanup(func() {
		run(filepath.Join(pgBinDir, "pg_ctl"), "-D", data, "-m", "immediate", "stop")
	})
	WaitForTCP(t, "postgresql", addr(port), 30*time.Second)
	run(filepath.Join(pgBinDir, "createdb"), "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "strata", "strata")
	return &Postgres{Port: port, DSN: fmt.Sprintf("postgres://strata@%s/strata?sslmode=disable", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))}
}

// CreateDatabase creates another database in the cluster and returns its DSN.
func (p *Postgres) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(pgBinDir, "createdb"), "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "strata", name).CombinedOutput()
	if err != nil {
		t.Fatalf("createdb %s: %v\n%s", name, err, out)
	}
	return fmt.Sprintf("postgres://strata@127.0.0.1:%d/%s?sslmode=disable", p.Port, name)
}

func shellQuote(args []string) string {
	s := ""
	for i, a := range args {
		if i > 0 {
			s += " "
		}
		s += "'" + a + "'"
	}
	return s
}
