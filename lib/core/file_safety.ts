/**
 * Who may have written the files beside the settings. The settings, the key
 * and certificate, the trust store, the control file and a token file decide
 * what a program listens on, who it is and whom it trusts, so each must
 * belong to the user running it (or to root, for files a system install put
 * there) and must not be writable by group or others. Otherwise another user
 * could plant or edit one, e.g. in a world-writable folder.
 *
 * Each file is opened first and the check reads the open handle's status, so
 * the file checked is the file read. Windows has no owner ids or mode bits in
 * `Deno.stat`: there the check is skipped, and {@linkcode fileSafetyNote} says
 * so for the log.
 *
 * @module
 */

import { permissionHint } from "./errors.ts";

/** The parts of a file's status the check reads (`Deno.FileInfo` has them). */
export interface FileOwnership {
  /** Owner's user id; null on Windows. */
  readonly uid: number | null;
  /** Type and permission bits; null on Windows. */
  readonly mode: number | null;
}

/** Thrown when a file belongs to another user or others may write it; `path` names the file. */
export class UnsafeFileError extends Error {
  /** The file that is not safe to read. */
  readonly path: string;
  /** An error about the file at `path`, with a message saying what to do. */
  constructor(path: string, message: string) {
    super(message);
    this.name = "UnsafeFileError";
    this.path = path;
  }
}

const IS_WINDOWS = Deno.build.os === "windows";
const ROOT_UID = 0;
const GROUP_OTHER_WRITE = 0o022;

/**
 * Check that a file belongs to `uid` (or to root) and is not writable by
 * group or others. `info` is the file's status (`file.stat()` on the open
 * handle), `uid` the user running the program; passing them in lets a test
 * check another user's file without being root. A status without owner or
 * mode (Windows) passes.
 *
 * @throws {UnsafeFileError} saying what is wrong and how to fix it.
 *
 * @example
 * ```ts
 * import { checkFileSafety } from "./file_safety.ts";
 * checkFileSafety("/home/ann/pf.yaml", { uid: 1000, mode: 0o100600 }, 1000);
 * checkFileSafety("/etc/pf.yaml", { uid: 0, mode: 0o100644 }, 1000);
 * let refused = 0;
 * for (const info of [{ uid: 1001, mode: 0o100600 }, { uid: 1000, mode: 0o100666 }]) {
 *   try {
 *     checkFileSafety("/tmp/pf.yaml", info, 1000);
 *   } catch {
 *     refused++;
 *   }
 * }
 * if (refused !== 2) throw new Error("unsafe file accepted");
 * ```
 */
export function checkFileSafety(path: string, info: FileOwnership, uid: number): void {
  if (info.uid !== null && info.uid !== uid && info.uid !== ROOT_UID) {
    throw new UnsafeFileError(
      path,
      `Cannot load "${path}": it belongs to user ${info.uid}, not you (${uid}); ` +
        `if you did not put it there, remove it, otherwise run as root: chown ${uid} "${path}"`,
    );
  }
  if (info.mode !== null && (info.mode & GROUP_OTHER_WRITE) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
    throw new UnsafeFileError(
      path,
      `Cannot load "${path}": it is writable by group/others (mode ${mode}); ` +
        `check its content, then run: chmod 600 "${path}"`,
    );
  }
}

let _uid: number | undefined;

/**
 * The id of the user running this process (cached). Needs `--allow-sys=uid`.
 *
 * @throws {Error} naming the missing permission.
 *
 * @example
 * ```ts
 * import { currentUid } from "./file_safety.ts";
 * if (Deno.build.os !== "windows" && currentUid() !== Deno.uid()) throw new Error("bad uid");
 * ```
 */
export function currentUid(): number {
  if (_uid !== undefined) return _uid;
  let uid: number | null;
  try {
    uid = Deno.uid();
  } catch (err) {
    throw new Error(
      `Cannot check who owns the files beside the settings: ${
        permissionHint(err, "--allow-sys=uid")
      }`,
      { cause: err },
    );
  }
  if (uid === null) throw new Error("Cannot check who owns the files beside the settings: no uid");
  _uid = uid;
  return uid;
}

/**
 * The log line saying the check is skipped on this system (Windows), or null
 * where it runs. Log it once at start.
 *
 * @example
 * ```ts
 * import { fileSafetyNote } from "./file_safety.ts";
 * if ((fileSafetyNote() !== null) !== (Deno.build.os === "windows")) throw new Error("bad");
 * ```
 */
export function fileSafetyNote(): string | null {
  return IS_WINDOWS
    ? "File owner and mode checks are skipped on Windows: keep the folder of the settings, key, " +
      "trust store and token files writable by you only"
    : null;
}

/**
 * Read a whole text file after checking, on the open handle, that it belongs
 * to this user (or root) and is not writable by group or others (see
 * {@linkcode checkFileSafety}). A missing file throws `Deno.errors.NotFound`
 * as `Deno.readTextFile` does.
 *
 * @throws {UnsafeFileError} when the file fails the check; other errors as `Deno.open` throws them.
 *
 * @example
 * ```ts
 * import { readOwnTextFile } from "./file_safety.ts";
 * const file = await Deno.makeTempFile();
 * await Deno.writeTextFile(file, "hello");
 * if (await readOwnTextFile(file) !== "hello") throw new Error("bad");
 * await Deno.remove(file);
 * ```
 */
export async function readOwnTextFile(path: string): Promise<string> {
  using file = await Deno.open(path, { read: true });
  if (!IS_WINDOWS) checkFileSafety(path, await file.stat(), currentUid());
  const chunks: Uint8Array[] = [];
  let size = 0;
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await file.read(buffer);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
    size += n;
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder().decode(bytes);
}
