package rootfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"github.com/moby/sys/user"

	"github.com/strata-build/strata/lib/errdefs"
)

// User is the identity a RUN step runs as.
type User struct {
	UID, GID uint32
	// Sgids are the supplementary groups, the primary one left out.
	Sgids []uint32
	Home  string
}

// LookupUser turns a Dockerfile USER value ("", "name", "uid", "name:group",
// "uid:gid", ...) into the identity a RUN step runs as, reading the image's
// /etc/passwd and /etc/group as Docker does: a name must exist; a numeric
// uid need not, and then gets gid 0 and home "/".
func LookupUser(root, spec string) (User, error) {
	if spec == "" {
		spec = "0"
	}
	passwd, err := idFile(root, "/etc/passwd")
	if err != nil {
		return User{}, err
	}
	group, err := idFile(root, "/etc/group")
	if err != nil {
		return User{}, err
	}
	eu, err := user.GetExecUser(spec, &user.ExecUser{Home: "/"}, passwd, group)
	if err != nil {
		return User{}, errdefs.InvalidArgument("unable to find user %s: %v", spec, err)
	}
	u := User{UID: uint32(eu.Uid), GID: uint32(eu.Gid), Home: eu.Home}
	for _, g := range eu.Sgids {
		if g != eu.Gid {
			u.Sgids = append(u.Sgids, uint32(g))
		}
	}
	if u.Home == "" {
		u.Home = "/"
	}
	return u, nil
}

// LookupChown turns a COPY/ADD --chown value into ids as Docker's classic
// builder does: "user[:group]", each a number or a name looked up in the
// image's /etc/passwd or /etc/group; a lone user stands for the group too
// ("app" is app:app, "1000" is 1000:1000).
func LookupChown(root, spec string) (uid, gid int, err error) {
	u, g, ok := strings.Cut(spec, ":")
	if !ok {
		g = u
	}
	if u == "" || g == "" || strings.Contains(g, ":") {
		return 0, 0, errdefs.InvalidArgument("invalid chown string format: %s", spec)
	}
	if uid, err = lookupID(root, "/etc/passwd", u, func(r io.Reader) ([]int, error) {
		users, err := user.ParsePasswdFilter(r, func(e user.User) bool { return e.Name == u })
		ids := make([]int, len(users))
		for i, e := range users {
			ids[i] = e.Uid
		}
		return ids, err
	}); err != nil {
		return 0, 0, err
	}
	gid, err = lookupID(root, "/etc/group", g, func(r io.Reader) ([]int, error) {
		groups, err := user.ParseGroupFilter(r, func(e user.Group) bool { return e.Name == g })
		ids := make([]int, len(groups))
		for i, e := range groups {
			ids[i] = e.Gid
		}
		return ids, err
	})
	return uid, gid, err
}

func lookupID(root, file, name string, find func(io.Reader) ([]int, error)) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		if n < 0 {
			return 0, errdefs.InvalidArgument("negative ID %d", n)
		}
		return n, nil
	}
	r, err := idFile(root, file)
	if err != nil {
		return 0, err
	}
	if r == nil {
		return 0, errdefs.InvalidArgument("no %s in the image to look up %q in", file, name)
	}
	ids, err := find(r)
	if err != nil {
		return 0, errdefs.InvalidArgument("reading %s of the image: %v", file, err)
	}
	if len(ids) == 0 {
		return 0, errdefs.InvalidArgument("%s of the image has no entry %q", file, name)
	}
	return ids[0], nil
}

// idFile reads an image's passwd or group file; a missing one reads as nil
// (moby/sys/user takes that as empty).
func idFile(root, name string) (io.Reader, error) {
	b, err := ReadFile(root, name, MaxIDFileBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(b), nil
}
