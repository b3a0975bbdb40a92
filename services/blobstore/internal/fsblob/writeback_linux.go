package fsblob

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to begin writing a file's range to disk
// without waiting for it (sync_file_range with SYNC_FILE_RANGE_WRITE), so
// that the fsync at commit finds little left: a large blob's durability is
// then paid while it streams in, not as a pause at its end (RocksDB's
// bytes_per_sync). A failure here is harmless: the fsync still does it all.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
