"""Writing an LMDB safely: all-or-nothing (``SafeLmdbWriter``), never over what is not an LMDB
(``check_replaceable``), and with a full disk as an error, not a SIGBUS (``check_space`` up
front, page reservation while writing); plus the skip report and ``write_datums`` for Datums
made in this process."""
import glob
import os
import shutil

import lmdb

from ltc import cli_checks, workers
from ltc.lmdb_build.errors import BuildError, DiskFull, signals_raise
from ltc.workers import is_no_space

MAX_KEY_BYTES = 511    # LMDB's default maximum key size
PAGE_BYTES = 4096      # LMDB's page size (the OS page size) for the estimate; the writer asks env.stat()
LOCK_BYTES = 8192      # lock.mdb for LMDB's default 126 readers


def remove_stale_partials(output, log=print):
    """Remove ``OUTPUT.partial-<pid>`` folders whose process is gone (a killed build)."""
    for p in glob.glob(glob.escape(output) + ".partial-*"):
        tail = p.rsplit(".partial-", 1)[1]
        if tail.isdigit() and int(tail) != os.getpid() and not workers.pid_alive(int(tail)):
            log("removing stale partial build %s (its process %s is gone)" % (p, tail))
            shutil.rmtree(p, ignore_errors=True)


def free_bytes(path):
    """Bytes an unprivileged process may still write on the filesystem of ``path`` (statvfs)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def mib(n):
    """``n`` bytes as 'x.y MiB'."""
    return "%.1f MiB" % (n / float(1 << 20))


def lmdb_bytes_per_entry(value_bytes, key_bytes, psize=PAGE_BYTES):
    """Bytes one entry takes in an append-built LMDB: overflow pages for a large value
    (a page header of 16 bytes, whole pages), else the value in the leaf; plus its leaf node."""
    node = 8 + key_bytes + 2  # node header, key, index slot in the leaf page
    if value_bytes + node > (psize - 16) // 2:
        return -(-(value_bytes + 16) // psize) * psize + node + 8
    return node + value_bytes


def _make_space_message(output, written, total, db_bytes, need, free_start, free_now, why):
    return ("disk full: the filesystem of OUTPUT '%s' ran out of space (%s) after %d of %d images were written "
            "(%s in the partial database); the database needs about %s, %s were free when the build started "
            "and %s are free now" % (output, why, written, total, mib(db_bytes), mib(need), mib(free_start),
                                     mib(free_now)))


def check_replaceable(output, overwrite):
    """BuildError unless ``output`` is free, or is an LMDB (a folder of data.mdb and lock.mdb only)
    and ``overwrite`` is set: --overwrite never replaces a file or a folder a user put there."""
    if not os.path.lexists(output):
        return
    if cli_checks.is_replaceable_lmdb(output):
        if not overwrite:
            raise BuildError("output '%s' already exists (an LMDB); pass --overwrite to replace it" % output)
        return
    raise BuildError("output '%s' already exists and is %s, not an LMDB (a folder holding only data.mdb "
                     "and lock.mdb); --overwrite replaces only an LMDB, so choose another output"
                     % (output, cli_checks.describe_existing(output)))


def check_space(output, need, how, sampled, log=print):
    """Refuse (DiskFull) when the database clearly will not fit beside OUTPUT.

    Clearly: the estimate is above the free space, or for a sampled (encoded) estimate
    more than 25% above it. Returns the free bytes.
    """
    parent = os.path.dirname(output)
    probe = parent
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    free = free_bytes(probe)
    if need is not None and (need * (0.8 if sampled else 1.0)) > free:
        raise DiskFull("not enough space for OUTPUT '%s': the database needs about %s (%s) and its filesystem has "
                       "%s free; nothing was written. Free some space, choose another OUTPUT, or pass --force to "
                       "try anyway" % (output, mib(need), how, mib(free)))
    return free


class SafeLmdbWriter(object):
    """Write an LMDB at ``output`` all-or-nothing.

    The database is built in ``output + '.partial-<pid>'`` (same folder, so the final
    rename is atomic on one filesystem); ``finish()`` renames it into place, ``abort()``
    (also called when a ``with`` block raises) removes it. A folder left behind by a
    SIGKILL keeps its ``.partial-<pid>`` name, so it is never taken for the output; the
    next build for the same OUTPUT removes it.
    Writes are buffered and committed every ``batch`` puts; when LMDB reports the map
    full the transaction is retried after ``set_mapsize`` doubles the map.

    Disk full: with writemap LMDB writes into memory-mapped pages of a sparse file, and a
    page the filesystem cannot back kills the process with SIGBUS. So before each
    transaction the pages it can touch are reserved with posix_fallocate (lock.mdb before
    LMDB opens it); a filesystem that cannot reserve them gets writemap=False. A full disk
    therefore shows up as ENOSPC from posix_fallocate (writemap) or as an LMDB write
    error (no writemap), and both raise ``DiskFull`` naming the output, how much was
    written, and the space needed against the space free; ``total`` (entries) and
    ``need_bytes`` describe the whole job for that message.
    """

    def __init__(self, output, overwrite=False, map_size=1 << 30, batch=1000, log=print, writemap=True,
                 total=None, need_bytes=None):
        self.output = os.path.abspath(output.rstrip("/") or output)
        self.overwrite = overwrite
        self.batch = max(1, int(batch))
        self.log = log
        self.env = None
        self.done = True          # nothing to clean up until the partial folder exists
        self.cleanup = ""
        self.pending = []
        self.count = 0
        self.grows = 0
        self.last_key = b""
        self.reserved = 0         # bytes of data.mdb known to be backed by the filesystem
        self.writemap = bool(writemap)
        self.total, self.need = total, need_bytes  # the whole job, for the disk-full message
        parent = os.path.dirname(self.output)
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        check_replaceable(self.output, overwrite)
        remove_stale_partials(self.output, log)
        self.free_start = free_bytes(parent)
        self.partial = "%s.partial-%d" % (self.output, os.getpid())
        if os.path.lexists(self.partial):
            shutil.rmtree(self.partial)
        self.map_size = int(max(1 << 20, map_size))
        self.done = False
        try:
            os.makedirs(self.partial)
            # lock.mdb is memory-mapped too: back its pages before LMDB touches them (this
            # also finds out whether the filesystem can reserve pages at all)
            can_reserve = self._can_reserve(os.path.join(self.partial, "lock.mdb"))
            if writemap and can_reserve is not True:
                self.log("the filesystem of %s cannot reserve pages (posix_fallocate: %s); writing without "
                         "writemap, so that a full disk is an error and not a SIGBUS" % (self.partial, can_reserve))
            writemap = bool(writemap) and can_reserve is True
            # writemap: pages are written straight into the map (about 2x faster puts of large
            # values); the file is then a sparse file as large as the map while building, and
            # finish() trims it to the used pages. writemap=False for filesystems without sparse files.
            self.writemap = writemap
            self.env = lmdb.open(self.partial, map_size=self.map_size, subdir=True, meminit=False,
                                 writemap=writemap, map_async=True, sync=False, metasync=False)
            self.psize = self.env.stat()["psize"]
            self.data_file = os.path.join(self.partial, "data.mdb")
        except BaseException as e:
            note = self.abort()
            if isinstance(e, (OSError, lmdb.Error)):
                err = self._space_error(e, doing="creating the partial database") or BuildError(
                    "cannot create the partial database %s: %s" % (self.partial, e), exit_code=1)
                err.cleanup = note
                raise err
            e.cleanup = note
            raise

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.done:
            self.abort()
        return False

    def put(self, key, value):
        if isinstance(key, str):
            key = key.encode("utf-8")
        if len(key) > MAX_KEY_BYTES:
            raise BuildError("key longer than %d bytes: %r" % (MAX_KEY_BYTES, key[:60]))
        self.pending.append((key, value))
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self):
        while self.pending:
            try:
                if self.writemap:
                    try:
                        self._reserve_txn(self.pending)
                    except OSError as e:
                        raise self._space_error(e, self.pending, "reserving pages for the next transaction") or \
                            BuildError("reserving pages in the partial database %s failed: %s" % (self.partial, e),
                                       exit_code=1)
                with self.env.begin(write=True) as txn:
                    for k, v in self.pending:
                        ok = txn.put(k, v, append=k > self.last_key, overwrite=False)
                        if not ok:
                            raise BuildError("duplicate key %r" % k)
                        if k > self.last_key:
                            self.last_key = k
            except lmdb.MapFullError:
                self.last_key = self._max_key()
                self.map_size *= 2
                self.grows += 1
                self.env.set_mapsize(self.map_size)
                continue
            except (OSError, lmdb.Error) as e:
                raise self._space_error(e, pending=self.pending) or BuildError(
                    "writing the partial database %s failed: %s" % (self.partial, e), exit_code=1)
            self.count += len(self.pending)
            self.pending = []

    def _max_key(self):
        with self.env.begin() as txn:
            cur = txn.cursor()
            return cur.key() if cur.last() else b""

    # -- disk space
    @staticmethod
    def _reserve_file(path, nbytes):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, nbytes)
        finally:
            os.close(fd)

    def _can_reserve(self, path):
        """Reserve LOCK_BYTES of ``path``: True, or the reason (a string) why this filesystem cannot."""
        try:
            self._reserve_file(path, LOCK_BYTES)
            return True
        except OSError as e:
            if is_no_space(e):
                raise
            return e.strerror or str(e)

    def _used_bytes(self):
        return (self.env.info()["last_pgno"] + 1) * self.psize

    def _reserve_txn(self, pending):
        """posix_fallocate the pages a transaction of ``pending`` can add to data.mdb.

        Upper bound on new pages: each large value's overflow pages, twice the leaf pages
        the small entries fill, the copied root-to-leaf path, free-list pages (64), and one
        page per 8 puts for splits. Capped at the map size (LMDB touches nothing past it).
        """
        ps = self.psize
        over, small = 0, 0
        for k, v in pending:
            node = 8 + len(k) + 2
            if len(v) + node > (ps - 16) // 2:
                over += -(-(len(v) + 16) // ps)
                small += node + 8
            else:
                small += node + len(v)
        pages = over + 2 * -(-small // ps) + 64 + len(pending) // 8
        end = min(self.map_size, self._used_bytes() + pages * ps)
        if end > self.reserved:
            fd = os.open(self.data_file, os.O_RDWR)
            try:
                os.posix_fallocate(fd, self.reserved, end - self.reserved)
            finally:
                os.close(fd)
            self.reserved = end

    def _db_bytes(self):
        try:
            return self._used_bytes() if self.env is not None else 0
        except lmdb.Error:
            return 0

    def _space_error(self, exc, pending=(), doing=""):
        """DiskFull for ``exc`` if it means the filesystem is full, else None."""
        parent = os.path.dirname(self.output)
        try:
            free_now = free_bytes(parent)
        except OSError:
            free_now = 0
        pending_bytes = sum(len(v) for _, v in pending)
        # without writemap a full disk surfaces as a short write, which LMDB reports as EIO
        if not (is_no_space(exc) or "No space left" in str(exc) or
                (isinstance(exc, lmdb.Error) and free_now < pending_bytes + (1 << 20))):
            return None
        written = self.count
        db = self._db_bytes()
        total = self.total if self.total is not None else written + len(pending)
        need = self.need or 0
        if written:
            need = max(need, int(db / written * total))
        why = getattr(exc, "strerror", None) or str(exc)
        if isinstance(exc, lmdb.Error) and "No space left" not in why:
            why += ", a write cut short by the full disk"
        if doing:
            why = "%s: %s" % (doing, why)
        return DiskFull(_make_space_message(self.output, written, total, db, need, self.free_start, free_now,
                                            why))

    def finish(self):
        """Commit, sync, close and rename into place; returns the final path."""
        self.flush()
        try:
            self.env.sync(True)
            used = self._used_bytes()
            self.env.close()
            data_file = os.path.join(self.partial, "data.mdb")
            if os.path.getsize(data_file) > used:
                # pages past last_pgno are unused: the file is then what a writer without
                # writemap leaves (smaller than the map size recorded in the meta page)
                os.truncate(data_file, used)
        except (OSError, lmdb.Error) as e:
            raise self._space_error(e, doing="finishing") or BuildError(
                "finishing the partial database %s failed: %s" % (self.partial, e), exit_code=1)
        old = None
        if os.path.lexists(self.output):
            if not self.overwrite or not cli_checks.is_replaceable_lmdb(self.output):
                self.abort()
                raise BuildError("output '%s' appeared while building (%s); not replacing it"
                                 % (self.output, cli_checks.describe_existing(self.output)))
            old = "%s.old-%d" % (self.output, os.getpid())
            os.rename(self.output, old)
        os.rename(self.partial, self.output)
        self.done = True
        if old:
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
        return self.output

    def abort(self):
        """Close and remove the partial folder; returns (and keeps in ``cleanup``) what was done."""
        try:
            if self.env is not None:
                self.env.close()
        except Exception:  # noqa: BLE001 - closing twice is harmless, we are cleaning up
            pass
        shutil.rmtree(self.partial, ignore_errors=True)
        self.done = True
        if os.path.lexists(self.partial):
            self.cleanup = "could NOT remove the partial database %s; remove it by hand" % self.partial
        else:
            self.cleanup = "removed the partial database %s" % self.partial
        return self.cleanup


def write_report(path, rows, header=("index", "path", "reason")):
    """Write a TSV report atomically (tmp file + rename)."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:  # non-UTF-8 names as on disk
            f.write("\t".join(header) + "\n")
            for row in rows:
                f.write("\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in row) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


def folder_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total


def write_datums(output, items, total=None, overwrite=False, batch=1000, map_bytes=None, progress=True,
                 log=print, desc=None):
    """Write (key, serialised Datum) pairs produced in this process, all-or-nothing.

    For generated data (the Fashion scenes); same safety as ``build_lmdb``. Returns
    the number written.
    """
    from tqdm import tqdm

    map_bytes = map_bytes or int(max(64 << 20, (total or 1000) * (256 * 256 * 3 + 256) * 1.25))
    with signals_raise() as sig:
        w = SafeLmdbWriter(output, overwrite=overwrite, map_size=map_bytes, batch=batch, log=log, total=total)
        try:
            for key, value in tqdm(items, total=total, unit="img", disable=not progress, desc=desc,
                                   dynamic_ncols=True, mininterval=0.5):
                w.put(key, value)
            w.flush()
            if w.count == 0:
                raise BuildError("nothing to write to %s" % output)
            n = w.count
            w.finish()
        except BaseException as exc:
            sig.hold()  # a second Ctrl-C must not cut the cleanup short
            exc.cleanup = w.abort() if not w.done else w.cleanup
            raise
    return n
