/**
 * Reading a TLS certificate and key from disk and checking them before a
 * server starts: a new generation with a broken pair fails before it says
 * ready, with a message naming the file and what to do, and the generation
 * serving keeps its certificate. (Left to the runtimes, a bad pair shows up
 * as a handshake failure on the first connection, after the handover, or as
 * an error that names no file.)
 *
 * @module
 */

import type * as crypto from "node:crypto";
import type * as Fs from "node:fs";
import * as host from "../host.ts";
import { InstarError } from "../errors.ts";

// node:fs is loaded by the first call that needs it, not at start-up (memory: docs/benchmarks.md).
const fs = (): typeof Fs => host.builtin("node:fs");

/**
 * A checked certificate and key, as PEM text for the runtime's server.
 *
 * @example
 * ```ts
 * import { readTlsFiles, type TlsFiles } from "@instar/instar";
 *
 * const files: TlsFiles = readTlsFiles({ cert: "/etc/app/cert.pem", key: "/etc/app/key.pem" });
 * console.log(files.fingerprint256, files.notAfter);
 * ```
 */
export interface TlsFiles {
  /** The certificate (chain) PEM, as read. */
  cert: string;
  /** The private key PEM, as read. */
  key: string;
  /** SHA-256 fingerprint of the leaf certificate (`AB:CD:…`). */
  fingerprint256: string;
  /** The leaf certificate's serial number (hex). */
  serialNumber: string;
  /** When the leaf certificate expires. */
  notAfter: Date;
}

/**
 * Options of {@link readTlsFiles}.
 *
 * @example
 * ```ts
 * import { readTlsFiles, type TlsFileOptions } from "@instar/instar";
 *
 * const o: TlsFileOptions = { cert: "cert.pem", key: "key.pem", allowExpired: false };
 * readTlsFiles(o);
 * ```
 */
export interface TlsFileOptions {
  /** Path of the PEM certificate (leaf first, then intermediates). */
  cert: string;
  /** Path of the PEM private key. */
  key: string;
  /** Accept a certificate outside its validity period (default false). */
  allowExpired?: boolean;
  /** The time to check validity against (default now; for tests). */
  now?: Date;
}

function read(path: string, what: string): string {
  if (typeof path !== "string" || path === "") {
    throw new InstarError(
      "INVALID_ARGUMENT",
      `the TLS ${what} path is ${JSON.stringify(path)}; expected a file path`,
    );
  }
  try {
    return fs().readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as { code?: string }).code ?? "error";
    throw new InstarError(
      "TLS_UNREADABLE",
      `cannot read the TLS ${what} ${path} (${code}): check that the file exists and that ` +
        "this user may read it",
      { cause: err },
    );
  }
}

/**
 * Reads `cert` and `key` and checks them: the certificate parses, the key
 * parses, the key belongs to the certificate, and (unless `allowExpired`)
 * the certificate is valid now. Throws an {@link InstarError} naming the file:
 * `TLS_UNREADABLE`, `TLS_BAD_CERT`, `TLS_BAD_KEY`, `TLS_KEY_MISMATCH` or
 * `TLS_EXPIRED` (also for a certificate not valid yet).
 *
 * @example
 * ```ts
 * import { readTlsFiles, Upgrader } from "@instar/instar";
 *
 * const up = await Upgrader.create();
 * // A broken pair fails here, before ready(): the running generation keeps serving.
 * const { cert, key } = readTlsFiles({ cert: "/etc/app/cert.pem", key: "/etc/app/key.pem" });
 * await up.serve({ port: 8443, cert, key, fetch: () => new Response("hi") }); // Bun: tls: { cert, key }
 * await up.ready();
 * ```
 */
export function readTlsFiles(o: TlsFileOptions): TlsFiles {
  const cert = read(o.cert, "certificate");
  const key = read(o.key, "private key");
  // Loaded here, not with mod.ts: node:crypto costs a few MB resident to every generation that
  // never reads a certificate (docs/benchmarks.md, Idle cost).
  const { createPrivateKey, X509Certificate } = host.builtin(
    "node:crypto",
  ) as typeof crypto;
  let x509: crypto.X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new InstarError(
      "TLS_BAD_CERT",
      `the TLS certificate ${o.cert} is not a PEM certificate (${(err as Error).message}): ` +
        "it must start with -----BEGIN CERTIFICATE-----",
      { cause: err },
    );
  }
  let pkey: crypto.KeyObject;
  try {
    pkey = createPrivateKey(key);
  } catch (err) {
    throw new InstarError(
      "TLS_BAD_KEY",
      `the TLS private key ${o.key} is not an unencrypted PEM private key (${
        (err as Error).message
      })`,
      { cause: err },
    );
  }
  if (!x509.checkPrivateKey(pkey)) {
    throw new InstarError(
      "TLS_KEY_MISMATCH",
      `the TLS private key ${o.key} does not belong to the certificate ${o.cert}: ` +
        "install the key the certificate was issued for (or the certificate for this key)",
    );
  }
  const notAfter = new Date(x509.validTo), notBefore = new Date(x509.validFrom);
  const now = o.now ?? new Date();
  if (!o.allowExpired && (now > notAfter || now < notBefore)) {
    throw new InstarError(
      "TLS_EXPIRED",
      `the TLS certificate ${o.cert} is valid from ${notBefore.toISOString()} to ` +
        `${notAfter.toISOString()}, not now (${now.toISOString()}): install a current certificate`,
    );
  }
  return {
    cert,
    key,
    fingerprint256: x509.fingerprint256,
    serialNumber: x509.serialNumber,
    notAfter,
  };
}
