package layertest

import (
	"io/fs"
	"strings"
)

// Mode is a way of writing an archive into a root filesystem. The modes
// differ in what is applied where, so a case may have a different (always
// contained) outcome in each.
type Mode int

const (
	// Layers: Lower and the archive are two layers, each unpacked on its
	// own by layer.Unpack and seen through overlay, as images from `strata
	// load` (and pulls) reach a build.
	Layers Mode = iota
	// OneLayer: Lower's entries then the archive's in one layer, as `strata
	// import` of a root filesystem tarball makes it.
	OneLayer
	// InPlace: the archive extracted by layer.Extract onto a root that
	// holds Lower, ".wh." names being plain files, as ADD of a local
	// archive does.
	InPlace
	// Add: an ADD step of the archive onto an image that holds Lower: what
	// InPlace gives, which the step's layer must then be able to hold.
	// Outcome falls back to InPlace's.
	Add
	// Steps: each entry of the archive made by a COPY step from a build
	// context (a symlink by copying a directory that holds it, a file or a
	// directory by copying it to the entry's name), onto an image that
	// holds Lower. Hard links and names a context cannot hold have no such
	// form.
	Steps
)

func (m Mode) String() string {
	return [...]string{"layers", "one layer", "in place", "ADD", "COPY steps"}[m]
}

// Case is one hostile archive and what extracting it must give.
//
// Names, targets and check paths hold placeholders, replaced by Expand
// with the host directory: {host} is its absolute path (what an escape
// reaches), {in} the same path without the leading "/" (where it lands
// inside a root) and {up} a relative path that climbs out of any root and
// down into it. Whatever the case, the host directory must not change.
type Case struct {
	Name string
	// Lower is what the root holds before the archive (a parent layer, a
	// base image); nil for nothing.
	Lower []Entry
	// Archive is the hostile archive.
	Archive []Entry
	// Want is the outcome in Layers mode, and in every mode Differs does
	// not name (but see Add).
	Want Outcome
	// Differs gives the outcome of the modes where it is not Want.
	Differs map[Mode]Outcome
	// Via, when set, is a path through a symlink the archive plants, and
	// Lands where it resolves inside the root: a later COPY into Via must
	// write into Lands.
	Via, Lands string
}

// Outcome is what extracting a case gives.
type Outcome struct {
	// Refused: the extraction fails as invalid input (and the host is
	// untouched all the same).
	Refused bool
	// Checks hold on the root afterwards.
	Checks []Check
	// Why says why a mode's outcome differs from Want.
	Why string
}

// Outcome returns the outcome of m.
func (c Case) Outcome(m Mode) Outcome {
	if o, ok := c.Differs[m]; ok {
		return o
	}
	if m == Add {
		return c.Outcome(InPlace)
	}
	return c.Want
}

// Expand returns the case with its placeholders replaced for the host
// directory host (an absolute, clean path).
func (c Case) Expand(host string) Case {
	in := strings.TrimPrefix(host, "/")
	r := strings.NewReplacer("{host}", host, "{in}", in, "{up}", strings.Repeat("../", 64)+in)
	entries := func(es []Entry) []Entry {
		if es == nil {
			return nil
		}
		out := make([]Entry, len(es))
		for i, e := range es {
			e.Name, e.Target = r.Replace(e.Name), r.Replace(e.Target)
			out[i] = e
		}
		return out
	}
	outcome := func(o Outcome) Outcome {
		checks := make([]Check, len(o.Checks))
		for i, ch := range o.Checks {
			ch.path, ch.also, ch.body = r.Replace(ch.path), r.Replace(ch.also), r.Replace(ch.body)
			checks[i] = ch
		}
		o.Checks = checks
		return o
	}
	x := c
	x.Lower, x.Archive = entries(c.Lower), entries(c.Archive)
	x.Want = outcome(c.Want)
	x.Differs = map[Mode]Outcome{}
	for m, o := range c.Differs {
		x.Differs[m] = outcome(o)
	}
	x.Via, x.Lands = r.Replace(c.Via), r.Replace(c.Lands)
	return x
}

// Cases returns the table, with placeholders (see Case).
func Cases() []Case {
	// Outcomes several cases share.
	var (
		whiteoutName = Outcome{Refused: true, Why: "a build step that makes a file named .wh.* fails: a layer cannot hold that name"}
		lowerLink    = Outcome{Refused: true, Why: "a layer is unpacked on its own, and a hard link to a file of a lower layer is refused"}
		sameLayer    = Outcome{Refused: true, Why: "a whiteout of a name its own layer holds is malformed: whiteouts hide lower layers only"}
	)
	refused := Outcome{Refused: true}
	passwdInside := []Entry{Dir("{in}/etc", 0o770), File("{host}/etc/passwd", "inside", 0o644)}
	lowerEtc := func(extra ...Entry) []Entry {
		return append([]Entry{Dir("{in}/etc", 0o755), File("{in}/etc/passwd", "all users", 0o644)}, extra...)
	}
	with := func(a []Entry, more ...Entry) []Entry { return append(append([]Entry{}, a...), more...) }

	return []Case{
		// Symlinks that lead a later entry out of the root
		// (containerd's TestBreakouts, §1.2).
		{
			Name:    "SymlinkAbsolute",
			Archive: []Entry{Dir("{in}/etc", 0o755), Symlink("localetc", "{host}/etc"), File("/localetc/unbroken", "unbroken", 0o644)},
			Want:    Outcome{Checks: []Check{IsFile("{in}/etc/unbroken", "unbroken"), IsSymlink("localetc", "{host}/etc")}},
			Via:     "localetc", Lands: "{in}/etc",
		},
		{
			Name:    "SymlinkUpAndOut",
			Archive: []Entry{Dir("{in}/etc", 0o755), Dir("dummy", 0o755), Symlink("localetc", "/dummy/..{host}/etc"), File("/localetc/unbroken", "unbroken", 0o644)},
			Want:    Outcome{Checks: []Check{IsFile("{in}/etc/unbroken", "unbroken")}},
			Via:     "localetc", Lands: "{in}/etc",
		},
		{
			Name: "SymlinkMultipleAbsolute",
			Archive: []Entry{Dir("{in}/etc", 0o755), Dir("dummy", 0o755), Symlink("/dummy/etc", "{host}/etc"),
				Symlink("localetc", "/dummy/etc"), File("/dummy/etc/unbroken", "unbroken", 0o644)},
			Want: Outcome{Checks: []Check{IsFile("{in}/etc/unbroken", "unbroken"), IsFile("localetc/unbroken", "unbroken")}},
			Via:  "localetc", Lands: "{in}/etc",
		},
		{
			Name: "SymlinkMultipleRelative",
			Archive: []Entry{Dir("{in}/etc", 0o755), Dir("dummy", 0o755), Symlink("/dummy/etc", "{host}/etc"),
				Symlink("localetc", "./dummy/etc"), File("/dummy/etc/unbroken", "unbroken", 0o644)},
			Want: Outcome{Checks: []Check{IsFile("{in}/etc/unbroken", "unbroken"), IsFile("localetc/unbroken", "unbroken")}},
			Via:  "localetc", Lands: "{in}/etc",
		},
		{
			Name: "SymlinkEmptyFile",
			Archive: []Entry{Dir("{in}/etc", 0o755), File("{in}/etc/emptied", "notempty", 0o644),
				Symlink("localetc", "{host}/etc"), File("/localetc/emptied", "", 0o644)},
			Want: Outcome{Checks: []Check{IsFile("{in}/etc/emptied", "")}},
			Via:  "localetc", Lands: "{in}/etc",
		},

		// Hard links whose target is reached through a symlink or a
		// climbing name (§1.3): they link the file inside the root.
		{
			Name:    "HardlinkRelative",
			Archive: with(passwdInside, Dir("breakouts", 0o755), Symlink("breakouts/d1", "{up}/etc"), Link("breakouts/mypasswd", "/breakouts/d1/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("breakouts/mypasswd", "{in}/etc/passwd"), IsFile("{in}/etc/passwd", "inside")}},
			Via:     "breakouts/d1", Lands: "{in}/etc",
		},
		{
			Name: "HardlinkDownAndOut",
			Archive: with(passwdInside, Dir("breakouts", 0o755), Dir("downandout", 0o755),
				Symlink("breakouts/d1", "../downandout/{up}/etc"), Link("breakouts/mypasswd", "/breakouts/d1/passwd")),
			Want: Outcome{Checks: []Check{SameFile("breakouts/mypasswd", "{in}/etc/passwd")}},
			Via:  "breakouts/d1", Lands: "{in}/etc",
		},
		{
			Name:    "HardlinkAbsolute",
			Archive: with(passwdInside, Symlink("localetc", "{host}/etc"), Link("localpasswd", "/localetc/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("localpasswd", "{in}/etc/passwd")}},
			Via:     "localetc", Lands: "{in}/etc",
		},
		{
			Name:    "HardlinkRelativeLong",
			Archive: with(passwdInside, Symlink("localetc", "{up}/etc"), Link("localpasswd", "/localetc/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("localpasswd", "{in}/etc/passwd")}},
			Via:     "localetc", Lands: "{in}/etc",
		},
		{
			Name:    "HardlinkRelativeUpAndOut",
			Archive: with(passwdInside, Symlink("localetc", "upandout/{up}/etc"), Link("localpasswd", "/localetc/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("localpasswd", "{in}/etc/passwd")}},
			Via:     "localetc", Lands: "{in}/etc",
		},
		{
			Name:    "HardlinkDirectRelative",
			Archive: with(passwdInside, Link("localpasswd", "{up}/etc/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("localpasswd", "{in}/etc/passwd")}},
		},
		{
			Name:    "HardlinkDirectAbsolute",
			Archive: with(passwdInside, Link("localpasswd", "{host}/etc/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("localpasswd", "{in}/etc/passwd")}},
		},

		// Symlinks with names that resolve to the root or its parent.
		{
			Name:    "SymlinkParentDirectory",
			Archive: with(passwdInside, Symlink("..", "{host}/etc/"), Link("localpasswd", "{host}/etc/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("localpasswd", "{in}/etc/passwd"), IsDir("{in}/etc")}},
		},
		{
			Name:    "SymlinkEmptyFilename",
			Archive: with(passwdInside, Symlink("", "{host}/etc/"), Link("localpasswd", "{host}/etc/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("localpasswd", "{in}/etc/passwd")}},
		},
		{
			Name:    "SymlinkParentRelative",
			Archive: with(passwdInside, Symlink("localetc/sub/..", "{host}/etc/"), Link("/localetc/localpasswd", "{host}/etc/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("localetc/localpasswd", "{in}/etc/passwd")}},
		},
		{
			Name:    "SymlinkSlashEnded",
			Archive: with(passwdInside, Dir("localetc/", 0o770), Link("/localetc/localpasswd", "{host}/etc/passwd")),
			Want:    Outcome{Checks: []Check{SameFile("localetc/localpasswd", "{in}/etc/passwd")}},
		},

		// An archive that turns what a lower layer holds into a symlink or
		// a directory, then writes through it.
		{
			Name:    "SymlinkOverrideDirectory",
			Lower:   lowerEtc(Dir("localetc", 0o755)),
			Archive: []Entry{Symlink("localetc", "{host}/etc"), Link("/localetc/localpasswd", "{host}/etc/passwd")},
			Want:    Outcome{Checks: []Check{SameFile("localetc/localpasswd", "{in}/etc/passwd"), IsSymlink("localetc", "{host}/etc")}},
			Differs: map[Mode]Outcome{Layers: lowerLink},
		},
		{
			Name:    "SymlinkOverrideDirectoryRelative",
			Lower:   lowerEtc(Dir("localetc", 0o755)),
			Archive: []Entry{Symlink("localetc", "{up}/etc"), Link("/localetc/localpasswd", "{host}/etc/passwd")},
			Want:    Outcome{Checks: []Check{SameFile("localetc/localpasswd", "{in}/etc/passwd")}},
			Differs: map[Mode]Outcome{Layers: lowerLink},
		},
		{
			Name:    "DirectoryOverrideSymlink",
			Lower:   lowerEtc(Symlink("localetc", "{host}/etc")),
			Archive: []Entry{Dir("/localetc/", 0o755), Link("/localetc/localpasswd", "{host}/etc/passwd")},
			Want:    Outcome{Checks: []Check{SameFile("localetc/localpasswd", "{in}/etc/passwd"), IsFile("{in}/etc/passwd", "all users")}},
			Differs: map[Mode]Outcome{Layers: lowerLink},
		},
		{
			Name:    "DirectoryOverrideSymlinkAndHardlink",
			Lower:   lowerEtc(Symlink("localetc", "{in}/etc"), Link("/localetc/localpasswd", "{in}/etc/passwd")),
			Archive: []Entry{Dir("/localetc/", 0o755), File("/localetc/localpasswd", "different", 0o644)},
			Want: Outcome{Checks: []Check{
				NotSameFile("localetc/localpasswd", "{in}/etc/passwd"),
				IsFile("localetc/localpasswd", "different"), IsFile("{in}/etc/passwd", "all users"),
			}},
		},

		// Whiteouts whose target is the root or a directory itself (§1.14).
		{Name: "WhiteoutRootParent", Lower: lowerEtc(), Archive: []Entry{File(".wh...", "", 0o644)}, Want: refused},
		{Name: "WhiteoutParent", Lower: lowerEtc(), Archive: []Entry{File("{in}/etc/.wh...", "", 0o644)}, Want: refused},
		{Name: "WhiteoutRoot", Lower: lowerEtc(), Archive: []Entry{File(".wh..", "", 0o644)}, Want: refused},
		{Name: "WhiteoutCurrentDirectory", Lower: lowerEtc(), Archive: []Entry{File("{in}/etc/.wh..", "", 0o644)}, Want: refused},

		// Whiteouts through symlinks and of symlinks.
		{
			Name:    "WhiteoutSymlink",
			Lower:   lowerEtc(Symlink("localetc", "{host}/etc")),
			Archive: []Entry{File(".wh.localetc", "", 0o644)},
			Want:    Outcome{Checks: []Check{IsFile("{in}/etc/passwd", "all users"), Absent("localetc")}},
			Differs: map[Mode]Outcome{
				OneLayer: sameLayer,
				InPlace:  {Checks: []Check{IsFile("{in}/etc/passwd", "all users"), IsSymlink("localetc", "{host}/etc"), IsFile(".wh.localetc", "")}},
				Add:      whiteoutName,
				Steps:    whiteoutName,
			},
		},
		{
			// containerd applies every layer into one tree, where the
			// whiteout follows the lower layer's symlink and removes
			// etc/whitedout. A layer unpacked on its own (as Docker's
			// overlay2 does too) has no localetc symlink: the whiteout's
			// parent is a new directory of the layer, which hides the
			// lower layer's symlink, and etc/whitedout stays.
			Name:    "WhiteoutSymlinkPath",
			Lower:   lowerEtc(File("{in}/etc/whitedout", "ahhhh whiteout", 0o644), Symlink("localetc", "{host}/etc")),
			Archive: []Entry{File("localetc/.wh.whitedout", "", 0o644)},
			Want: Outcome{Checks: []Check{
				IsFile("{in}/etc/passwd", "all users"), IsFile("{in}/etc/whitedout", "ahhhh whiteout"),
				IsDir("localetc"), Absent("localetc/whitedout"),
			}},
			Differs: map[Mode]Outcome{
				OneLayer: sameLayer,
				InPlace:  {Checks: []Check{IsFile("{in}/etc/whitedout", "ahhhh whiteout"), IsFile("{in}/etc/.wh.whitedout", "")}},
				Add:      whiteoutName,
				Steps:    whiteoutName,
			},
		},
		{
			Name:    "WhiteoutDirectoryName",
			Lower:   lowerEtc(File("{in}/etc/whitedout", "ahhhh whiteout", 0o644), Symlink("localetc", "{host}/etc")),
			Archive: []Entry{File("{in}/.wh.etc/somefile", "non-empty", 0o644)},
			Want:    Outcome{Checks: []Check{IsFile("{in}/etc/passwd", "all users"), IsFile("{in}/.wh.etc/somefile", "non-empty")}},
			Differs: map[Mode]Outcome{Add: whiteoutName, Steps: whiteoutName},
		},
		{
			Name:    "WhiteoutDeadSymlinkParent",
			Lower:   lowerEtc(Symlink("localetc", "{host}/dne")),
			Archive: []Entry{File("localetc/.wh.etc", "", 0o644)},
			Want:    Outcome{Checks: []Check{IsFile("{in}/etc/passwd", "all users")}},
			Differs: map[Mode]Outcome{
				InPlace: {Checks: []Check{IsFile("{in}/etc/passwd", "all users"), IsFile("{in}/dne/.wh.etc", "")}},
				Add:     whiteoutName,
				Steps:   whiteoutName,
			},
		},
		{
			Name:    "WhiteoutRelativePath",
			Lower:   lowerEtc(Symlink("localetc", "{host}/dne")),
			Archive: []Entry{File("{in}/dne/../.wh.etc", "", 0o644)},
			Want:    Outcome{Checks: []Check{Absent("{in}/etc/passwd"), Absent("{in}/etc")}},
			Differs: map[Mode]Outcome{
				OneLayer: sameLayer,
				InPlace:  {Checks: []Check{IsFile("{in}/etc/passwd", "all users"), IsFile("{in}/.wh.etc", "")}},
				Add:      whiteoutName,
				Steps:    whiteoutName,
			},
		},
		{
			Name:    "WhiteoutOpaque",
			Lower:   lowerEtc(File("{in}/etc/shadow", "root:secret", 0o600)),
			Archive: []Entry{File("{in}/etc/.wh..wh..opq", "", 0o600), File("{in}/etc/group", "all groups", 0o644)},
			Want:    Outcome{Checks: []Check{Absent("{in}/etc/passwd"), Absent("{in}/etc/shadow"), IsFile("{in}/etc/group", "all groups")}},
			Differs: map[Mode]Outcome{
				OneLayer: {Checks: []Check{IsFile("{in}/etc/passwd", "all users"), IsFile("{in}/etc/group", "all groups")},
					Why: "an opaque directory hides the lower layers only, not files of its own layer (image-spec)"},
				InPlace: {Checks: []Check{IsFile("{in}/etc/passwd", "all users"), IsFile("{in}/etc/.wh..wh..opq", "")}},
				Add:     whiteoutName,
				Steps:   whiteoutName,
			},
		},
		{
			Name:    "WhiteoutOpaqueOutOfOrder",
			Lower:   lowerEtc(),
			Archive: []Entry{File("{in}/etc/group", "all groups", 0o644), File("{in}/etc/.wh..wh..opq", "", 0o600)},
			Want:    Outcome{Checks: []Check{Absent("{in}/etc/passwd"), IsFile("{in}/etc/group", "all groups")}},
			Differs: map[Mode]Outcome{
				OneLayer: {Checks: []Check{IsFile("{in}/etc/passwd", "all users"), IsFile("{in}/etc/group", "all groups")},
					Why: "an opaque directory hides the lower layers only, not files of its own layer (image-spec)"},
				InPlace: {Checks: []Check{IsFile("{in}/etc/passwd", "all users"), IsFile("{in}/etc/.wh..wh..opq", "")}},
				Add:     whiteoutName,
				Steps:   whiteoutName,
			},
		},
		{
			Name:    "WhiteoutThroughHostSymlink",
			Archive: []Entry{Symlink("localetc", "{host}/etc"), File("localetc/.wh.passwd", "", 0o644)},
			Want:    Outcome{Checks: []Check{Absent("{in}/etc/passwd"), IsSymlink("localetc", "{host}/etc")}},
			Differs: map[Mode]Outcome{
				InPlace: {Checks: []Check{IsFile("{in}/etc/.wh.passwd", "")}},
				Add:     whiteoutName,
				Steps:   whiteoutName,
			},
		},

		// A directory replaced by a symlink to the host, written through,
		// and replaced again (containerd's SymlinkOverridePath).
		{
			Name: "SymlinkOverridePath",
			Archive: []Entry{
				Dir("foo", 0o755), Dir("foo/sentinel", 0o755), File("foo/sentinel/breakout", "012", 0o644),
				Symlink("foo", "{host}"), File("foo/sentinel/breakout", "345", 0o644),
				Dir("foo", 0o755), Dir("foo/sentinel", 0o755), File("foo/sentinel/breakout", "678", 0o644),
			},
			Want: Outcome{Checks: []Check{IsFile("foo/sentinel/breakout", "678"), IsFile("{in}/sentinel/breakout", "345")}},
			Differs: map[Mode]Outcome{Steps: {Refused: true,
				Why: "COPY does not replace a directory with a symlink"}},
		},
		// The ADD host write of issue 11: a directory, a hard link that
		// replaces it, a symlink to the host that replaces that, and a file
		// through it.
		{
			Name: "DirectoryLinkSymlinkWrite",
			Archive: []Entry{Dir("d/", 0o755), File("f", "f", 0o644), Link("d", "f"),
				Symlink("d", "{host}/sentinel"), File("d/x", "x", 0o644)},
			Want: Outcome{Checks: []Check{IsSymlink("d", "{host}/sentinel"), IsFile("{in}/sentinel/x", "x"), IsFile("f", "f")}},
			Via:  "d", Lands: "{in}/sentinel",
		},

		// Hard links of symlinks: they link the symlink, not its target.
		{
			Name: "HardlinkSymlinkBeforeCreateTarget",
			Archive: []Entry{Dir("{in}/etc", 0o770), Symlink("localpasswd", "{host}/etc/passwd"),
				Link("localpasswd-dup", "localpasswd"), File("{host}/etc/passwd", "after", 0o644)},
			Want: Outcome{Checks: []Check{
				SameFile("localpasswd-dup", "{in}/etc/passwd"), IsSymlink("localpasswd-dup", "{host}/etc/passwd"),
				IsFile("{in}/etc/passwd", "after"),
			}},
		},
		{
			Name:    "HardlinkSymlinkRelative",
			Archive: with(passwdInside, Symlink("passwdlink", "{up}/etc/passwd"), Link("localpasswd", "/passwdlink")),
			Want: Outcome{Checks: []Check{
				IsSymlink("localpasswd", "{up}/etc/passwd"), IsSymlink("passwdlink", "{up}/etc/passwd"),
				SameFile("localpasswd", "{in}/etc/passwd"),
			}},
		},
		{
			Name:    "HardlinkSymlinkAbsolute",
			Archive: with(passwdInside, Symlink("passwdlink", "{host}/etc/passwd"), Link("localpasswd", "/passwdlink")),
			Want: Outcome{Checks: []Check{
				IsSymlink("localpasswd", "{host}/etc/passwd"), IsSymlink("passwdlink", "{host}/etc/passwd"),
				SameFile("localpasswd", "{in}/etc/passwd"),
			}},
		},
		{
			// CVE-2021-32760: the link's mode must not reach the file outside.
			Name:    "HardlinkSymlinkChmod",
			Archive: []Entry{Symlink("{host}/also-exists-outside-root", "{host}/perm400"), Link("sketchylink", "{host}/also-exists-outside-root")},
			Want: Outcome{Checks: []Check{
				IsSymlink("sketchylink", "{host}/perm400"), IsSymlink("{in}/also-exists-outside-root", "{host}/perm400"),
			}},
		},
		{
			Name:    "HardlinkToHostFile",
			Archive: []Entry{Symlink("h", "{host}"), Link("stolen", "h/secret")},
			Want:    Outcome{Refused: true, Why: "the target resolves inside the root, where there is no such file"},
		},

		// Names that are absolute or climb out (§1.1).
		{
			Name:    "DotDotName",
			Archive: []Entry{File("{up}/sentinel/pwn", "x", 0o644)},
			Want:    Outcome{Checks: []Check{IsFile("{in}/sentinel/pwn", "x")}},
		},
		{
			Name:    "AbsoluteName",
			Archive: []Entry{File("{host}/etc/passwd", "layer", 0o644)},
			Want:    Outcome{Checks: []Check{IsFile("{in}/etc/passwd", "layer")}},
		},
		{
			Name:    "DotDotInsideName",
			Archive: []Entry{File("./a/{up}/sentinel/pwn", "x", 0o644)},
			Want:    Outcome{Checks: []Check{IsFile("{in}/sentinel/pwn", "x"), Absent("a")}},
		},
		{
			Name:    "BackslashName",
			Archive: []Entry{File(`..\..\x`, "x", 0o644)},
			Want:    Outcome{Checks: []Check{IsFile(`..\..\x`, "x")}},
		},

		// Modes set on what a symlink stands in place of: never through
		// the symlink (containerd's TestLchmodDoesNotFollowSymlink and
		// TestFchmodDirRefusesSymlink facts), and setuid kept.
		{
			Name:    "FileOverHostSymlink",
			Archive: []Entry{Symlink("f", "{host}/secret"), File("f", "mine", 0o777)},
			Want:    Outcome{Checks: []Check{IsFile("f", "mine"), HasPerm("f", 0o777), Absent("{in}/secret")}},
		},
		{
			Name:    "DirectoryOverHostSymlink",
			Archive: []Entry{Symlink("d", "{host}/sentinel"), Dir("d", 0o700)},
			Want:    Outcome{Checks: []Check{IsDir("d"), HasPerm("d", 0o700), Absent("{in}/sentinel")}},
			Differs: map[Mode]Outcome{Steps: {Checks: []Check{IsSymlink("d", "{host}/sentinel"), HasPerm("{in}/sentinel", 0o700)},
				Why: "COPY follows a symlink that stands where its destination directory is, inside the root"}},
		},
		{
			Name:    "SetuidKept",
			Archive: []Entry{File("su", "su", 0o4755)},
			Want:    Outcome{Checks: []Check{HasPerm("su", 0o755|fs.ModeSetuid)}},
		},
	}
}
