/**
 * Identities: each program's key and self-signed certificate, the fingerprint
 * format people compare (`SHA256:` + unpadded base64 of the certificate's
 * SHA-256), the Daemon's proof that it holds its key, and the Console's store
 * of trusted Daemons.
 *
 * Keys are ECDSA P-256: both rustls (the session's TLS) and WebCrypto (the
 * identity proof) handle it everywhere Deno runs.
 *
 * @module
 */

import type * as X509 from "@peculiar/x509";
import { writeFileAtomic } from "./io.ts";
import { ConfigError, errorMessage } from "./errors.ts";
import { readOwnTextFile } from "./file_safety.ts";
import type { Role } from "./protocol.ts";

let x509Loading: Promise<typeof X509> | null = null;

/**
 * The X.509 library, loaded on first use rather than at import: it needs the
 * `reflect-metadata` polyfill, which adds functions to the global `Reflect`,
 * and importing this module (or `mod.ts`) must set no global.
 */
function _x509(): Promise<typeof X509> {
  x509Loading ??= (async () => {
    await import("reflect-metadata");
    const x509 = await import("@peculiar/x509");
    x509.cryptoProvider.set(crypto);
    return x509;
  })();
  return x509Loading;
}

const EC_ALGORITHM = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN_ALGORITHM = { name: "ECDSA", hash: "SHA-256" } as const;
const VALIDITY_MS = 20 * 365.25 * 24 * 60 * 60 * 1000;
/** Larger than any certificate we make; bounds what a peer can hand us. */
const MAX_CERT_B64_CHARS = 8 * 1024;
const FINGERPRINT_PATTERN = /^SHA256:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]$/;

export type { Role } from "./protocol.ts";

/** The DNS name in each role's certificate. `.invalid` never resolves, so no public CA can vouch for it. */
export const CERT_HOSTNAMES: Readonly<Record<Role, string>> = {
  console: "portferry-console.invalid",
  daemon: "portferry-daemon.invalid",
};

/** Where an identity's files live. */
export interface IdentityPaths {
  /** PKCS#8 PEM private key, owner-only. */
  key: string;
  /** PEM certificate. */
  cert: string;
}

/** Options for {@linkcode loadOrCreateIdentity}. */
export interface IdentityOptions {
  /** Names the certificate when one is created. */
  role: Role;
}

/** A program's identity, ready for TLS and for signing. */
export interface Identity {
  /** The certificate, PEM. */
  readonly certPem: string;
  /** The private key, PEM (PKCS #8). */
  readonly keyPem: string;
  /** The certificate, DER. */
  readonly certDer: Uint8Array;
  /** `SHA256:` + unpadded base64 of SHA-256(certDer). */
  readonly fingerprint: string;
  /** ECDSA P-256 signing key, not extractable. */
  readonly privateKey: CryptoKey;
  /** True when the files were created by this call. */
  readonly created: boolean;
  /** Problems worth telling the user about, e.g. a key file others can read. */
  readonly warnings: readonly string[];
}

/**
 * Load the identity at `paths`, or create it when neither file exists.
 *
 * A key without its certificate (or the reverse), or a file that does not
 * parse, is an error naming the file: an existing key is never replaced.
 * So is a file that belongs to another user (not root) or that group or
 * others can write (an `UnsafeFileError` from `./file_safety.ts`).
 *
 * @example
 * ```ts
 * import { loadOrCreateIdentity } from "./identity.ts";
 * const dir = await Deno.makeTempDir();
 * const paths = { key: `${dir}/c.key`, cert: `${dir}/c.crt` };
 * const first = await loadOrCreateIdentity(paths, { role: "console" });
 * const again = await loadOrCreateIdentity(paths, { role: "console" });
 * if (!first.created || again.created || first.fingerprint !== again.fingerprint) {
 *   throw new Error("identity not reloaded");
 * }
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadOrCreateIdentity(
  paths: IdentityPaths,
  options: IdentityOptions,
): Promise<Identity> {
  const keyPem = await _readIfExists(paths.key);
  const certPem = await _readIfExists(paths.cert);
  if (keyPem === null && certPem === null) return await _createIdentity(paths, options.role);
  if (keyPem === null) {
    throw new Error(
      `Cannot load identity: key "${paths.key}" is missing but certificate "${paths.cert}" exists; ` +
        `restore the key, or delete the certificate to create a new identity (the fingerprint will change)`,
    );
  }
  if (certPem === null) {
    throw new Error(
      `Cannot load identity: certificate "${paths.cert}" is missing but key "${paths.key}" exists; ` +
        `restore the certificate, or delete the key to create a new identity (the fingerprint will change)`,
    );
  }
  const warnings: string[] = [];
  const info = await Deno.stat(paths.key);
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    warnings.push(
      `Key file "${paths.key}" can be read by other users (mode ${
        (info.mode & 0o777).toString(8)
      }); run: chmod 600 "${paths.key}"`,
    );
  }
  return { ...(await _parseIdentity(paths, keyPem, certPem)), created: false, warnings };
}

/**
 * The fingerprint of a certificate: `SHA256:` + unpadded base64 of SHA-256(DER).
 *
 * @example
 * ```ts
 * import { fingerprintOf, isFingerprint } from "./identity.ts";
 * const fp = await fingerprintOf(new Uint8Array([1, 2, 3]));
 * if (!isFingerprint(fp)) throw new Error(fp);
 * ```
 */
export async function fingerprintOf(certDer: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", certDer as Uint8Array<ArrayBuffer>);
  return "SHA256:" + new Uint8Array(digest).toBase64({ omitPadding: true });
}

/**
 * Whether `text` is a fingerprint in canonical form (`SHA256:` + 43 base64 characters).
 *
 * @example
 * ```ts
 * import { isFingerprint } from "./identity.ts";
 * if (!isFingerprint("SHA256:" + "A".repeat(43))) throw new Error("valid rejected");
 * if (isFingerprint("SHA256:" + "A".repeat(42)) || isFingerprint("sha256:" + "A".repeat(43))) {
 *   throw new Error("invalid accepted");
 * }
 * ```
 */
export function isFingerprint(text: string): boolean {
  return FINGERPRINT_PATTERN.test(text);
}

/**
 * Convert a colon-separated hex SHA-256 (node's `fingerprint256`,
 * `"AB:CD:…"`) to our fingerprint format. Throws `SyntaxError` on anything
 * but 32 hex bytes.
 *
 * @example
 * ```ts
 * import { fingerprintFromHex } from "./identity.ts";
 * const fp = fingerprintFromHex(Array(32).fill("00").join(":"));
 * if (fp !== "SHA256:" + "A".repeat(43)) throw new Error(fp);
 * ```
 */
export function fingerprintFromHex(colonHex: string): string {
  if (!/^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}$/.test(colonHex)) {
    throw new SyntaxError(
      `Cannot read fingerprint: "${colonHex}" is not 32 colon-separated hex bytes`,
    );
  }
  const bytes = new Uint8Array(colonHex.split(":").map((h) => parseInt(h, 16)));
  return "SHA256:" + bytes.toBase64({ omitPadding: true });
}

/**
 * Sign `data` with the identity key (ECDSA P-256, SHA-256). Returns base64.
 *
 * @example
 * ```ts
 * import { loadOrCreateIdentity, signChallenge, verifyChallenge } from "./identity.ts";
 * const dir = await Deno.makeTempDir();
 * const id = await loadOrCreateIdentity({ key: `${dir}/d.key`, cert: `${dir}/d.crt` }, { role: "daemon" });
 * const data = new TextEncoder().encode("nonce");
 * const fp = await verifyChallenge(id.certDer.toBase64(), await signChallenge(id, data), data);
 * if (fp !== id.fingerprint) throw new Error(fp);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function signChallenge(
  identity: Pick<Identity, "privateKey">,
  data: Uint8Array,
): Promise<string> {
  const signature = await crypto.subtle.sign(
    SIGN_ALGORITHM,
    identity.privateKey,
    data as Uint8Array<ArrayBuffer>,
  );
  return new Uint8Array(signature).toBase64();
}

/**
 * Check that `signatureB64` is the signature of `data` by the key in the
 * certificate `certB64` (base64 DER). Returns that certificate's fingerprint.
 * Throws `Error("Cannot verify Daemon identity: …")` on a bad certificate or
 * signature.
 *
 * @example
 * ```ts
 * import { verifyChallenge } from "./identity.ts";
 * const failed = await verifyChallenge("AAAA", "AAAA", new Uint8Array(1)).then(() => false, () => true);
 * if (!failed) throw new Error("garbage verified");
 * ```
 */
export async function verifyChallenge(
  certB64: string,
  signatureB64: string,
  data: Uint8Array,
): Promise<string> {
  const fail = (detail: string, cause?: unknown) =>
    new Error(`Cannot verify Daemon identity: ${detail}`, { cause });
  if (certB64.length > MAX_CERT_B64_CHARS) throw fail("certificate too large");
  let certDer: Uint8Array;
  let signature: Uint8Array;
  try {
    certDer = Uint8Array.fromBase64(certB64);
    signature = Uint8Array.fromBase64(signatureB64);
  } catch (err) {
    throw fail("certificate or signature is not base64", err);
  }
  const x509 = await _x509();
  let publicKey: CryptoKey;
  try {
    const cert = new x509.X509Certificate(certDer as Uint8Array<ArrayBuffer>);
    publicKey = await crypto.subtle.importKey(
      "spki",
      cert.publicKey.rawData,
      EC_ALGORITHM,
      false,
      ["verify"],
    );
  } catch (err) {
    throw fail(`certificate is not an ECDSA P-256 X.509 certificate (${errorMessage(err)})`, err);
  }
  const ok = await crypto.subtle.verify(
    SIGN_ALGORITHM,
    publicKey,
    signature as Uint8Array<ArrayBuffer>,
    data as Uint8Array<ArrayBuffer>,
  ).catch(() => false);
  if (!ok) throw fail("signature does not match certificate");
  return await fingerprintOf(certDer);
}

/** One Daemon the Console trusts without asking. */
export interface TrustedDaemon {
  /** The Daemon's certificate fingerprint (`SHA256:` + 43 base64 characters). */
  readonly fingerprint: string;
  /** Host name the Daemon reported when it was trusted. */
  readonly host: string;
  /** OS user the Daemon reported when it was trusted. */
  readonly user: string;
  /** ISO 8601 time it was added. */
  readonly addedAt: string;
}

/**
 * The Console's list of trusted Daemon fingerprints, kept in a JSON file
 * (owner-only, replaced atomically on every change). A missing file is an
 * empty store.
 *
 * @example
 * ```ts
 * import { TrustStore } from "./identity.ts";
 * const dir = await Deno.makeTempDir();
 * const store = await TrustStore.load(`${dir}/c.trust.json`);
 * const fingerprint = "SHA256:" + "A".repeat(43);
 * await store.add({ fingerprint, host: "db01", user: "ops" });
 * const again = await TrustStore.load(`${dir}/c.trust.json`);
 * if (!again.has(fingerprint) || !(await again.remove(fingerprint)) || again.list().length !== 0) {
 *   throw new Error("trust store did not persist");
 * }
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class TrustStore {
  /** The file the store is read from and written to. */
  readonly path: string;
  #entries: TrustedDaemon[];

  private constructor(path: string, entries: TrustedDaemon[]) {
    this.path = path;
    this.#entries = entries;
  }

  /**
   * Read the store at `path`; a missing file is empty. Throws `ConfigError` on
   * a malformed file, and `UnsafeFileError` (`./file_safety.ts`) on a file that
   * belongs to another user (not root) or that group or others can write.
   */
  static async load(path: string): Promise<TrustStore> {
    const text = await _readIfExists(path);
    if (text === null) return new TrustStore(path, []);
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`Cannot read trust store: ${errorMessage(err)}`, { path, cause: err });
    }
    const daemons = (data as { daemons?: unknown } | null)?.daemons;
    if (!Array.isArray(daemons)) {
      throw new ConfigError(`Cannot read trust store: expected {"daemons": [...]}`, { path });
    }
    const entries = daemons.map((entry, i) => _checkTrusted(entry, `daemons[${i}]`, path));
    return new TrustStore(path, entries);
  }

  /** Every trusted Daemon, oldest first. */
  list(): readonly TrustedDaemon[] {
    return [...this.#entries];
  }

  /** Whether `fingerprint` is trusted. */
  has(fingerprint: string): boolean {
    return this.#entries.some((e) => e.fingerprint === fingerprint);
  }

  /** Trust a Daemon (replacing any entry with the same fingerprint) and save. */
  async add(entry: Omit<TrustedDaemon, "addedAt"> & { addedAt?: string }): Promise<void> {
    if (!isFingerprint(entry.fingerprint)) {
      throw new TypeError(`Cannot trust Daemon: "${entry.fingerprint}" is not a fingerprint`);
    }
    const full: TrustedDaemon = {
      fingerprint: entry.fingerprint,
      host: entry.host,
      user: entry.user,
      addedAt: entry.addedAt ?? new Date().toISOString(),
    };
    const next = this.#entries.filter((e) => e.fingerprint !== entry.fingerprint);
    next.push(full);
    await this.#save(next);
  }

  /** Stop trusting `fingerprint` and save. Returns false when it was not trusted. */
  async remove(fingerprint: string): Promise<boolean> {
    const next = this.#entries.filter((e) => e.fingerprint !== fingerprint);
    if (next.length === this.#entries.length) return false;
    await this.#save(next);
    return true;
  }

  async #save(entries: TrustedDaemon[]): Promise<void> {
    const text = JSON.stringify({ daemons: entries }, null, 2) + "\n";
    await writeFileAtomic(this.path, text);
    this.#entries = entries;
  }
}

function _checkTrusted(entry: unknown, where: string, path: string): TrustedDaemon {
  const e = entry as Record<string, unknown> | null;
  const fields = ["fingerprint", "host", "user", "addedAt"] as const;
  if (typeof e !== "object" || e === null || fields.some((f) => typeof e[f] !== "string")) {
    throw new ConfigError(
      `Cannot read trust store: ${where} needs string fields ${fields.join(", ")}`,
      { path },
    );
  }
  if (!isFingerprint(e.fingerprint as string)) {
    throw new ConfigError(
      `Cannot read trust store: ${where}.fingerprint "${e.fingerprint}" is not a fingerprint`,
      { path },
    );
  }
  return {
    fingerprint: e.fingerprint as string,
    host: e.host as string,
    user: e.user as string,
    addedAt: e.addedAt as string,
  };
}

async function _createIdentity(paths: IdentityPaths, role: Role): Promise<Identity> {
  const x509 = await _x509();
  const keys = await crypto.subtle.generateKey(EC_ALGORITHM, true, ["sign", "verify"]);
  const now = Date.now();
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] &= 0x7f; // positive
  serial[0] |= 0x01; // no leading zero byte to strip
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Array.from(serial, (b) => b.toString(16).padStart(2, "0")).join(""),
    name: `CN=portferry-${role}`,
    notBefore: new Date(now - 60 * 60 * 1000),
    notAfter: new Date(now + VALIDITY_MS),
    signingAlgorithm: { ...EC_ALGORITHM, ...SIGN_ALGORITHM },
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(
        [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
        false,
      ),
      new x509.SubjectAlternativeNameExtension([{ type: "dns", value: CERT_HOSTNAMES[role] }]),
    ],
  });
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  const keyPem = x509.PemConverter.encode(pkcs8.buffer, "PRIVATE KEY") + "\n";
  const certPem = cert.toString("pem") + "\n";
  // Key first: a crash in between leaves a key without a certificate, which
  // loading reports instead of silently replacing.
  await writeFileAtomic(paths.key, keyPem);
  await writeFileAtomic(paths.cert, certPem);
  return { ...(await _parseIdentity(paths, keyPem, certPem)), created: true, warnings: [] };
}

async function _parseIdentity(
  paths: IdentityPaths,
  keyPem: string,
  certPem: string,
): Promise<Omit<Identity, "created" | "warnings">> {
  const x509 = await _x509();
  let cert: X509.X509Certificate;
  try {
    cert = new x509.X509Certificate(certPem);
  } catch (err) {
    throw new Error(
      `Cannot load identity: certificate "${paths.cert}" is not a PEM certificate (${
        errorMessage(err)
      }); restore it, or delete it and "${paths.key}" to create a new identity`,
      { cause: err },
    );
  }
  let privateKey: CryptoKey;
  let publicJwk: JsonWebKey;
  try {
    const der = x509.PemConverter.decodeFirst(keyPem);
    const extractable = await crypto.subtle.importKey("pkcs8", der, EC_ALGORITHM, true, ["sign"]);
    publicJwk = await crypto.subtle.exportKey("jwk", extractable);
    privateKey = await crypto.subtle.importKey("pkcs8", der, EC_ALGORITHM, false, ["sign"]);
  } catch (err) {
    throw new Error(
      `Cannot load identity: key "${paths.key}" is not a PKCS#8 ECDSA P-256 PEM key (${
        errorMessage(err)
      }); restore it, or delete it and "${paths.cert}" to create a new identity`,
      { cause: err },
    );
  }
  const certJwk = await cert.publicKey.export(EC_ALGORITHM, ["verify"])
    .then((k) => crypto.subtle.exportKey("jwk", k))
    .catch(() => null);
  if (certJwk === null || certJwk.x !== publicJwk.x || certJwk.y !== publicJwk.y) {
    throw new Error(
      `Cannot load identity: certificate "${paths.cert}" does not belong to key "${paths.key}"; ` +
        `restore the matching pair, or delete both to create a new identity`,
    );
  }
  const certDer = new Uint8Array(cert.rawData);
  return { certPem, keyPem, certDer, fingerprint: await fingerprintOf(certDer), privateKey };
}

async function _readIfExists(path: string): Promise<string | null> {
  try {
    return await readOwnTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}
