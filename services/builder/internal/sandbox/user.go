package sandbox

import (
	"errors"
	"io"
	"io/fs"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

type resolvedUser struct {
	uid, gid uint32
	sgids    []uint32
	home     string
}

// maxIDFileBytes bounds the /etc/passwd and /etc/group read from an image.
const maxIDFileBytes = 4 << 20

// resolveUser turns a Dockerfile USER value ("", "name", "uid", "name:group",
// "uid:gid", ...) into ids, reading /etc/passwd and /etc/group of the image
// as if rootfs were "/" (a symlink, absolute or not, never leads out of it),
// as Docker does: a name must exist; a numeric uid need not, and then gets
// gid 0 and home "/".
func resolveUser(rootfs, spec string) (resolvedUser, error) {
	if spec == "" {
		spec = "0"
	}
	passwd, closePasswd, err := openIDFile(rootfs, "/etc/passwd")
	if err != nil {
		return resolvedUser{}, err
	}
	defer closePasswd()
	group, closeGroup, err := openIDFile(rootfs, "/etc/group")
	if err != nil {
		return resolvedUser{}, err
	}
	defer closeGroup()

	eu, err := user.GetExecUser(spec, &user.ExecUser{Home: "/"}, passwd, group)
	if err != nil {
		return resolvedUser{}, errdefs.InvalidArgument("unable to find user %s: %v", spec, err)
	}
	u := resolvedUser{uid: uint32(eu.Uid), gid: uint32(eu.Gid), home: eu.Home}
	for _, g := range eu.Sgids {
		if g != eu.Gid {
			u.sgids = append(u.sgids, uint32(g))
		}
	}
	if u.home == "" {
		u.home = "/"
	}
	return u, nil
}

// openIDFile opens an image's passwd or group file inside rootfs; a missing
// file reads as empty (nil reader, as moby/sys/user accepts).
func openIDFile(rootfs, name string) (io.Reader, func(), error) {
	handle, err := pathrs.OpenInRoot(rootfs, name) // an O_PATH handle
	if errors.Is(err, fs.ErrNotExist) {
		return nil, func() {}, nil
	}
	if err != nil {
		return nil, nil, errdefs.InvalidArgument("reading %s of the image: %v", name, err)
	}
	defer handle.Close()
	f, err := pathrs.Reopen(handle, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, nil, errdefs.InvalidArgument("reading %s of the image: %v", name, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, errdefs.InvalidArgument("%s of the image is not a regular file", name)
	}
	return io.LimitReader(f, maxIDFileBytes), func() { f.Close() }, nil
}
