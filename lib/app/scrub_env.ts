/**
 * Removes `LOG_TOKENS` and `LOG_STREAM` from this process's environment.
 * Imported first by the entry files, before anything parses YAML.
 *
 * The `yaml` package prints every token it parses to stdout when either is
 * set, which would print the settings, `socksPassword` included, into the
 * program's output and logs. It reads both on every parse, and under Deno a
 * read of a variable `--allow-env` does not grant throws, so the permission
 * flags must keep granting them: deleting them is what makes the reads come
 * back empty.
 *
 * @module
 */

for (const name of ["LOG_TOKENS", "LOG_STREAM"]) {
  try {
    Deno.env.delete(name);
  } catch (err) {
    // Not granted: then yaml's own read fails loudly; nothing to hide here.
    if (!(err instanceof Deno.errors.NotCapable)) throw err;
  }
}
