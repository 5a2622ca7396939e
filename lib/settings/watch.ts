/**
 * Watching a settings file: each change, once it settles, is read, checked
 * and reported; changes this process wrote itself are skipped.
 *
 * @module
 */

import { basename, dirname, resolve } from "node:path";
import { ConfigError, errorMessage } from "../core/errors.ts";
import { readOwnTextFile, UnsafeFileError } from "../core/file_safety.ts";
import { _isOwnWrite } from "./edit.ts";

/** Options for {@linkcode watchSettings}. */
export interface WatchSettingsOptions<T> {
  /** Turns file text into settings, e.g. `parseConsoleSettings`. */
  parse: (text: string, path: string) => T;
  /** Called with the new settings after the file changed. */
  onChange: (settings: T, text: string) => void;
  /** Called when the changed file is invalid or unreadable; keep the old settings. */
  onError: (err: ConfigError) => void;
  /** Stops watching. */
  signal: AbortSignal;
  /** The text the caller's settings came from (from a load); no event fires for it. */
  knownText?: string | null;
  /** Quiet time before a change is read. Default 100 ms. */
  debounceMs?: number;
}

/**
 * Watches a settings file and reports each change once it settles. It
 * watches the folder (an editor's atomic rename replaces the file), skips
 * changes this process made with {@linkcode updateConsoleSettings} (by
 * comparing the text), and reports through `onError` an invalid file, or one
 * that belongs to another user (not root) or that group or others can write.
 *
 * The watch is in place when the function returns. The promise settles when
 * `signal` aborts; it rejects if a callback throws, which also stops the watch,
 * and with a {@linkcode ConfigError} when the folder cannot be watched.
 *
 * @example
 * ```ts
 * import { parseConsoleSettings } from "./schema.ts";
 * import { watchSettings } from "./watch.ts";
 * const dir = await Deno.makeTempDir();
 * const ac = new AbortController();
 * const done = watchSettings(`${dir}/portferry-console.yaml`, {
 *   parse: parseConsoleSettings,
 *   onChange: () => {},
 *   onError: () => {},
 *   signal: ac.signal,
 * });
 * ac.abort();
 * await done;
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function watchSettings<T>(path: string, options: WatchSettingsOptions<T>): Promise<void> {
  const { signal } = options;
  const debounceMs = options.debounceMs ?? 100;
  if (signal.aborted) return Promise.resolve();
  const abs = resolve(path);
  const name = basename(abs);
  let watcher: Deno.FsWatcher;
  try {
    watcher = Deno.watchFs(dirname(abs), { recursive: false });
  } catch (err) {
    return Promise.reject(
      new ConfigError(`Cannot watch the settings folder: ${errorMessage(err)}`, {
        path,
        cause: err,
      }),
    );
  }
  const seen = { text: options.knownText };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pending: Promise<void> = Promise.resolve();
  let failure: { err: unknown } | undefined;
  let closed = false;

  const close = () => {
    clearTimeout(timer);
    if (closed) return;
    closed = true;
    try {
      watcher.close();
    } catch {
      // Already closed.
    }
  };

  const check = () => _checkOnce(abs, path, options, seen, () => !!failure);

  signal.addEventListener("abort", close, { once: true });
  return (async () => {
    try {
      for await (const event of watcher) {
        if (!event.paths.some((p) => basename(p) === name)) continue;
        clearTimeout(timer);
        timer = setTimeout(() => {
          pending = pending.then(check).catch((err) => {
            failure ??= { err };
            close();
          });
        }, debounceMs);
      }
    } finally {
      close();
      signal.removeEventListener("abort", close);
      await pending;
    }
    if (failure) throw failure.err;
  })();
}

/** Why reading the changed file failed, as the error to report; null when there is nothing new. */
function _readError(
  err: unknown,
  path: string,
  seen: { text?: string | null },
): ConfigError | null {
  if (err instanceof UnsafeFileError) {
    // Not reloaded; once fixed, the next change event reads it again.
    return new ConfigError(
      `Cannot reload settings: ${err.message}; keeping the current settings`,
      { cause: err },
    );
  }
  if (err instanceof Deno.errors.NotFound) {
    if (seen.text === null) return null;
    seen.text = null;
    return new ConfigError(
      "Cannot reload settings: the file is gone; keeping the current settings",
      { path, cause: err },
    );
  }
  return new ConfigError(`Cannot reload settings: ${errorMessage(err)}`, { path, cause: err });
}

/** Read the watched file once it settled, and report a change that is not our own write. */
async function _checkOnce<T>(
  abs: string,
  path: string,
  options: WatchSettingsOptions<T>,
  seen: { text?: string | null },
  failed: () => boolean,
): Promise<void> {
  const { signal } = options;
  if (signal.aborted || failed()) return;
  let text: string;
  try {
    text = await readOwnTextFile(abs);
  } catch (err) {
    const error = signal.aborted ? null : _readError(err, path, seen);
    if (error) options.onError(error);
    return;
  }
  if (signal.aborted || text === seen.text) return;
  seen.text = text;
  if (_isOwnWrite(abs, text)) return;
  let settings: T;
  try {
    settings = options.parse(text, path);
  } catch (err) {
    options.onError(
      err instanceof ConfigError
        ? err
        : new ConfigError(`Cannot reload settings: ${errorMessage(err)}`, { path, cause: err }),
    );
    return;
  }
  options.onChange(settings, text);
}
