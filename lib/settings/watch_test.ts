import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError } from "../core/errors.ts";
import { updateConsoleSettings } from "./edit.ts";
import { type ConsoleSettings, parseConsoleSettings } from "./schema.ts";
import { watchSettings } from "./watch.ts";

const COMMENTED = `# portferry Console settings
# second header line

session: "0.0.0.0:7470" # the session port
autoAccept: false

pfos:
  # The public web site.
  - name: web
    listen: 8080 # keep in sync with nginx
    target: localhost:80

  # The database, read-only replica.
  - name: db
    listen: "5432"
    target: db01:5432
    enabled: true

# Daemons we know.
trusted: []
logLevel: info # set debug when hunting bugs
`;

/** Resolves with the promise, or rejects after `ms` naming what was awaited. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "portferry-settings-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

function recorder() {
  type Event = { kind: "change"; settings: ConsoleSettings; text: string } | {
    kind: "error";
    err: ConfigError;
  };
  const events: Event[] = [];
  const waiters: ((e: Event) => void)[] = [];
  const push = (e: Event) => {
    events.push(e);
    waiters.shift()?.(e);
  };
  let read = 0;
  return {
    events,
    onChange: (settings: ConsoleSettings, text: string) => push({ kind: "change", settings, text }),
    onError: (err: ConfigError) => push({ kind: "error", err }),
    next(): Promise<Event> {
      const index = read++;
      if (index < events.length) return Promise.resolve(events[index]);
      return new Promise((resolve) => waiters.push(resolve));
    },
  };
}

/**
 * Writes `text` to portferry-console.yaml in `dir` and watches it, the way a
 * running Console knows its own text; disposing aborts the watcher and awaits it.
 */
async function watchedConsoleFile(dir: string, text: string) {
  const path = join(dir, "portferry-console.yaml");
  await Deno.writeTextFile(path, text);
  const rec = recorder();
  const ac = new AbortController();
  const done = watchSettings(path, {
    parse: parseConsoleSettings,
    onChange: rec.onChange,
    onError: rec.onError,
    signal: ac.signal,
    knownText: text,
  });
  return {
    path,
    rec,
    async [Symbol.asyncDispose]() {
      ac.abort();
      await done;
    },
  };
}

async function externalAtomicWrite(path: string, text: string): Promise<void> {
  // As editors do: write a sibling file, then rename it over the original.
  const tmp = `${path}.editor-swap`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

Deno.test("watchSettings() reports an external atomic rename and an invalid file", async () => {
  await using dir = await tempDir();
  await using watched = await watchedConsoleFile(dir.path, "graceMs: 1\n");
  const { path, rec } = watched;
  await externalAtomicWrite(path, "graceMs: 2\n");
  const first = await within(rec.next(), 5000, "the change event");
  assert.equal(first.kind, "change");
  assert.equal(first.kind === "change" && first.settings.graceMs, 2);

  await externalAtomicWrite(path, "graceMs: two\n");
  const second = await within(rec.next(), 5000, "the error event");
  assert.equal(second.kind, "error");
  assert.ok(second.kind === "error" && second.err.message.startsWith(`${path}:1:10: `));

  // Writes to other files in the folder are not reported.
  await Deno.writeTextFile(join(dir.path, "other.yaml"), "graceMs: 3\n");
  await externalAtomicWrite(path, "graceMs: 4\n");
  const third = await within(rec.next(), 5000, "the third event");
  assert.equal(third.kind === "change" && third.settings.graceMs, 4);
  assert.equal(rec.events.length, 3);
});

Deno.test("watchSettings() skips the file's own updateConsoleSettings() writes", async () => {
  await using dir = await tempDir();
  await using watched = await watchedConsoleFile(dir.path, COMMENTED);
  const { path, rec } = watched;
  await updateConsoleSettings(path, { op: "removePfo", name: "db" });
  // Negative case: a bounded wait, well past the 100 ms debounce, for an event that must not come.
  await new Promise((resolve) => setTimeout(resolve, 400));
  assert.deepEqual(rec.events, [], "own write was reported");
  // An external change after it is still reported, and it is the first event.
  await externalAtomicWrite(path, "graceMs: 7\n");
  const first = await within(rec.next(), 5000, "the external change");
  assert.equal(first.kind === "change" && first.settings.graceMs, 7);
  assert.equal(rec.events.length, 1);
});

Deno.test("watchSettings() stops when the signal aborts", async () => {
  await using dir = await tempDir();
  const ac = new AbortController();
  const done = watchSettings(join(dir.path, "c.yaml"), {
    parse: parseConsoleSettings,
    onChange: () => assert.fail("no change expected"),
    onError: () => assert.fail("no error expected"),
    signal: ac.signal,
  });
  ac.abort();
  await within(done, 2000, "the watcher to stop");
  ac.abort();
  const aborted = watchSettings(join(dir.path, "c.yaml"), {
    parse: parseConsoleSettings,
    onChange: () => {},
    onError: () => {},
    signal: ac.signal,
  });
  await within(aborted, 2000, "an already aborted watcher");
});

Deno.test("watchSettings() rejects with ConfigError when the folder cannot be watched", async () => {
  await using dir = await tempDir();
  const ac = new AbortController();
  await assert.rejects(
    () =>
      watchSettings(join(dir.path, "missing", "c.yaml"), {
        parse: parseConsoleSettings,
        onChange: () => {},
        onError: () => {},
        signal: ac.signal,
      }),
    (err: unknown) => err instanceof ConfigError && err.message.includes("Cannot watch"),
  );
});
