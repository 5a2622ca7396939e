/**
 * One running program per settings file: an exclusive lock held on
 * `<settings>.lock` for as long as the program runs.
 *
 * The lock is an operating-system file lock (`flock` on Unix, `LockFileEx`
 * on Windows) taken with `FsFile.tryLock`, which never waits. The system
 * releases it when the process ends, however it ends, so a crash leaves no
 * stale lock behind. The file itself stays: removing it could let two
 * programs lock two different files of the same name.
 *
 * @module
 */

import { errorMessage } from "../core/errors.ts";
import { writeAll } from "../core/io.ts";

/** Another copy of the program holds the lock. */
export class AlreadyRunningError extends Error {
  /** The other copy's process id, when it could be read. */
  readonly pid: number | null;
  /** An error with `message` and the other copy's `pid` (null when unknown). */
  constructor(message: string, pid: number | null) {
    super(message);
    this.name = "AlreadyRunningError";
    this.pid = pid;
  }
}

/** A held lock; disposing it releases it. */
export interface InstanceLock extends Disposable {
  /** The lock file. */
  readonly path: string;
  /** Release the lock; a second call does nothing. */
  release(): void;
}

/** The lock file of a settings file. */
export function lockPath(settingsPath: string): string {
  return `${settingsPath}.lock`;
}

/**
 * Take the lock for `settingsPath`, or throw {@linkcode AlreadyRunningError}
 * naming the copy that holds it. Call it before creating or binding anything.
 *
 * @example
 * ```ts
 * import { AlreadyRunningError, lockInstance } from "./instance_lock.ts";
 * const dir = await Deno.makeTempDir();
 * const settings = `${dir}/portferry-console.yaml`;
 * using _held = await lockInstance(settings, "Console");
 * const second = await lockInstance(settings, "Console").catch((err) => err);
 * if (!(second instanceof AlreadyRunningError)) throw new Error("locked twice");
 * _held.release();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function lockInstance(
  settingsPath: string,
  program: "Console" | "Daemon",
): Promise<InstanceLock> {
  const path = lockPath(settingsPath);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  } catch (cause) {
    throw new Error(`Cannot start: cannot open the lock file "${path}": ${errorMessage(cause)}`, {
      cause,
    });
  }
  let locked: boolean;
  try {
    locked = await file.tryLock(true);
  } catch (cause) {
    file.close();
    throw new Error(`Cannot start: cannot lock "${path}": ${errorMessage(cause)}`, { cause });
  }
  if (!locked) {
    file.close();
    const pid = await _holder(path, settingsPath);
    throw new AlreadyRunningError(
      `Cannot start: a ${program} is already running for ${settingsPath} (pid ${pid ?? "unknown"})`,
      pid,
    );
  }
  try {
    await file.truncate(0);
    const bytes = new TextEncoder().encode(`${Deno.pid}\n`);
    await writeAll(file, bytes);
  } catch {
    // The pid is a courtesy for the message above; the lock is what counts.
  }
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    try {
      file.unlockSync();
    } catch {
      // Closing releases it too.
    }
    file.close();
  };
  return { path, release, [Symbol.dispose]: release };
}

/**
 * The holder's pid: from the lock file, which it writes right after locking
 * (read it again briefly in case we came in between), or, where the system
 * forbids reading a locked file (Windows), from its control file.
 */
async function _holder(path: string, settingsPath: string): Promise<number | null> {
  for (let attempt = 0; attempt < 20; attempt++) {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch {
      break;
    }
    const pid = _pid(text);
    if (pid !== null) return pid;
    await new Promise((r) => setTimeout(r, 25));
  }
  try {
    const control = settingsPath.replace(/\.ya?ml$/i, "") + ".control.json";
    return _pid(String((JSON.parse(await Deno.readTextFile(control)) as { pid?: unknown }).pid));
  } catch {
    return null;
  }
}

function _pid(text: string): number | null {
  const m = text.trim().match(/^[0-9]{1,10}$/);
  return m ? Number(m[0]) : null;
}
