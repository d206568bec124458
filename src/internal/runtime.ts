/**
 * The Python runtime on disk: `RUNTIME_FILES` (the package shipped inside
 * this module) written once per content hash into a per-user cache,
 * `<base>/<hash>/burn_p2p_python_runtime/*.py`, whose `<base>/<hash>` goes
 * first on the worker's PYTHONPATH. So the worker runs the same code however
 * this module was imported (a path, an https: URL, JSR, npm).
 *
 * - Base: `$BURN_P2P_RUNTIME_CACHE`, else `$XDG_CACHE_HOME/burn-p2p-python-worker`,
 *   else `%LOCALAPPDATA%\burn-p2p-python-worker` on Windows, else
 *   `$HOME/.cache/burn-p2p-python-worker`. Created 0700.
 * - Atomic: the files go into a fresh temporary directory beside the final one,
 *   each fsynced, the marker (`.complete`, holding the hash) last; then one
 *   `rename`. A hash directory exists only complete, so the marker proves it
 *   and the fast path is a marker read plus two `lstat`s, no hashing. Losing
 *   the rename to another process that finished the same hash is success: its
 *   copy is used and ours removed. A hash directory without its marker is
 *   refused, never repaired in place (see `materializeSync`).
 * - Private: a base or hash directory that another user owns, or that group
 *   or others can write, is refused (`RuntimeCacheError`, `Insecure`). Not
 *   checked on Windows, where POSIX modes mean nothing.
 *
 * Plain synchronous `node:fs` in one `Effect.try`: it runs on every worker
 * start, and the fast path costs a few microseconds this way.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import {
  closeSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  type Stats,
  statSync,
  writeSync,
} from "node:fs"
import { dirname, join } from "node:path"
import process from "node:process"
import { RuntimeCacheError } from "../RuntimeCache.ts"
import { RUNTIME_FILES, RUNTIME_HASH } from "./runtimeFiles.ts"

/** The cache folder's name under XDG_CACHE_HOME, ~/.cache or %LOCALAPPDATA%. */
export const CACHE_NAME = "burn-p2p-python-worker"
/** Present, holding the hash, only in a complete hash directory. */
export const MARKER = ".complete"
/** Prefix of the temporary directories beside the hash directories. */
export const TEMP_PREFIX = ".tmp-"
/** A temporary directory older than this was left by a process that died; the next slow path removes it. */
const STALE_TEMP_MILLIS = 10 * 60 * 1000

const isWindows = process.platform === "win32"

/** Reads a variable; empty counts as unset. Under Deno a variable not allowed by `--allow-env` throws. */
const env = (name: string): string | undefined => {
  const value = process.env[name]
  return value === undefined || value === "" ? undefined : value
}

/** The cache base directory, from the environment. */
export const cacheBase = (): string => {
  const explicit = env("BURN_P2P_RUNTIME_CACHE")
  if (explicit !== undefined) return explicit
  const xdg = env("XDG_CACHE_HOME")
  if (xdg !== undefined) return join(xdg, CACHE_NAME)
  if (isWindows) {
    const local = env("LOCALAPPDATA")
    if (local !== undefined) return join(local, CACHE_NAME)
    const profile = env("USERPROFILE")
    if (profile !== undefined) return join(profile, "AppData", "Local", CACHE_NAME)
  }
  const home = env("HOME")
  if (home !== undefined) return join(home, ".cache", CACHE_NAME)
  throw new RuntimeCacheError({
    reason: "NoCacheDirectory",
    path: "",
    detail: isWindows
      ? "BURN_P2P_RUNTIME_CACHE, XDG_CACHE_HOME, LOCALAPPDATA, USERPROFILE and HOME are all unset"
      : "BURN_P2P_RUNTIME_CACHE, XDG_CACHE_HOME and HOME are all unset",
  })
}

/** Throws `Insecure` unless `stats` (of `path`) is a directory of this user that only this user can write. */
const checkPrivate = (path: string, stats: Stats, uid: number | undefined): void => {
  if (!stats.isDirectory()) {
    throw new RuntimeCacheError({ reason: "Io", path, detail: "it exists and is not a directory" })
  }
  if (uid === undefined) return
  if (stats.uid !== uid) {
    throw new RuntimeCacheError({
      reason: "Insecure",
      path,
      detail: `is owned by uid ${stats.uid}, not by this user (uid ${uid})`,
    })
  }
  if ((stats.mode & 0o022) !== 0) {
    throw new RuntimeCacheError({
      reason: "Insecure",
      path,
      detail: `has mode ${(stats.mode & 0o7777).toString(8).padStart(4, "0")}, writable by ${
        (stats.mode & 0o020) !== 0 ? "its group" : "others"
      }`,
    })
  }
}

/** Whether `hashDir` holds a complete copy of `hash`: its marker says so. */
const isComplete = (hashDir: string, hash: string): boolean => {
  try {
    return readFileSync(join(hashDir, MARKER), "utf8") === hash
  } catch {
    return false
  }
}

const lstatOrUndefined = (path: string): Stats | undefined => {
  try {
    return lstatSync(path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw error
  }
}

/** Writes `text` to a new file and flushes it to disk. */
const writeDurably = (path: string, text: string): void => {
  const fd = openSync(path, "wx", 0o600)
  try {
    writeSync(fd, text)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Flushes a directory's entries to disk where the platform allows it (not on Windows). */
const syncDirectory = (path: string): void => {
  if (isWindows) return
  const fd = openSync(path, "r")
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Removes temporary directories that a process which died mid-write left in `base`. */
const sweepStaleTemps = (base: string, now: number): void => {
  for (const name of readdirSync(base)) {
    if (!name.startsWith(TEMP_PREFIX)) continue
    const path = join(base, name)
    try {
      if (now - lstatSync(path).mtimeMs > STALE_TEMP_MILLIS) rmSync(path, { recursive: true, force: true })
    } catch {
      // Gone already, or not ours to remove: the next sweep tries again.
    }
  }
}

/** The slow path: writes the files into a temporary directory and renames it into place. */
const install = (
  base: string,
  hashDir: string,
  hash: string,
  files: { readonly [path: string]: string },
): void => {
  const tempDir = mkdtempSync(join(base, `${TEMP_PREFIX}${hash.slice(0, 16)}-`))
  try {
    for (const [relative, text] of Object.entries(files)) {
      const path = join(tempDir, relative)
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
      writeDurably(path, text)
    }
    writeDurably(join(tempDir, MARKER), hash)
    for (const directory of new Set(Object.keys(files).map((path) => dirname(join(tempDir, path))))) {
      syncDirectory(directory)
    }
    syncDirectory(tempDir)
    try {
      renameSync(tempDir, hashDir)
    } catch (error) {
      // Another process completed the same hash first (ENOTEMPTY/EEXIST; EPERM on Windows): use theirs.
      if (isComplete(hashDir, hash)) return
      throw error
    }
  } finally {
    // After a successful rename there is nothing left at tempDir.
    rmSync(tempDir, { recursive: true, force: true })
  }
}

/**
 * Makes sure `<base>/<hash>` holds the runtime; its path. Synchronous; throws
 * `RuntimeCacheError` or a file system error.
 */
export const materializeSync = (
  now: number,
  base: string = cacheBase(),
  hash: string = RUNTIME_HASH,
  files: { readonly [path: string]: string } = RUNTIME_FILES,
): string => {
  const uid = isWindows ? undefined : process.getuid?.()
  const hashDir = join(base, hash)
  // Fast path: the marker, and the two directories still private.
  if (isComplete(hashDir, hash)) {
    checkPrivate(base, statSync(base), uid)
    checkPrivate(hashDir, lstatSync(hashDir), uid)
    return hashDir
  }
  mkdirSync(base, { recursive: true, mode: 0o700 })
  checkPrivate(base, statSync(base), uid)
  sweepStaleTemps(base, now)
  const existing = lstatOrUndefined(hashDir)
  if (existing !== undefined) {
    checkPrivate(hashDir, existing, uid)
    // `install` renames only complete copies into place, so this one was made some other way (or damaged).
    // Not removed here: a process racing us might be running a worker from a copy it just completed.
    if (!isComplete(hashDir, hash)) {
      throw new RuntimeCacheError({
        reason: "Io",
        path: hashDir,
        detail: `it exists without its completion marker (${MARKER}), so it was not written by this library or ` +
          `is damaged; remove it (\`rm -r ${hashDir}\`) and it will be written again`,
      })
    }
    return hashDir
  }
  install(base, hashDir, hash, files)
  syncDirectory(base)
  checkPrivate(hashDir, lstatSync(hashDir), uid)
  return hashDir
}

/**
 * The runtime's directory (to put first on PYTHONPATH), written to the cache
 * on first use.
 */
export const materialize: Effect.Effect<string, RuntimeCacheError> = Effect.flatMap(
  Clock.currentTimeMillis,
  (now) => Effect.try({ try: () => materializeSync(now), catch: toRuntimeCacheError }),
)

/** Any failure of `materializeSync` as a `RuntimeCacheError`. */
const toRuntimeCacheError = (error: unknown): RuntimeCacheError => {
  if (error instanceof RuntimeCacheError) return error
  const failure = error as NodeJS.ErrnoException
  let path = failure.path
  if (path === undefined) {
    try {
      path = cacheBase()
    } catch {
      path = ""
    }
  }
  // Deno's NotCapable (a missing --allow-* flag) has no errno code.
  const denied = failure.name === "NotCapable" || failure.name === "PermissionDenied" ||
    failure.code === "EACCES" || failure.code === "EPERM"
  return new RuntimeCacheError({
    reason: denied ? "PermissionDenied" : "Io",
    path,
    detail: failure.message ?? String(error),
  })
}
