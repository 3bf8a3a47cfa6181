/**
 * Failures of the object store's contents (storage/store.ts, storage/checkpoints.ts): an
 * object that is not there, or whose bytes do not match the sha256 recorded with them. A
 * retry reads the same bytes, so activities/errors.ts maps both to non-retryable failures
 * (a checkpoint load skips a corrupt commit and tries the previous one instead).
 */

/** An object whose bytes do not match the sha256 recorded when it was written. */
export class CorruptObjectError extends Error {
  constructor(
    readonly key: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`object ${key} is corrupt: sha256 ${actual} does not match the recorded ${expected}`);
    this.name = 'CorruptObjectError';
  }
}

/** An object that does not exist. */
export class MissingObjectError extends Error {
  constructor(readonly key: string) {
    super(`object ${key} does not exist`);
    this.name = 'MissingObjectError';
  }
}

/**
 * Node's codes for a TLS certificate it does not accept (untrusted CA, self-signed, expired,
 * wrong host name): a retry meets the same certificate.
 */
export const TLS_CERT_CODES = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** The store's https endpoint presented a certificate this process does not accept. */
export class StoreTlsError extends Error {
  constructor(
    readonly endpoint: string,
    readonly code: string,
    cause: Error,
  ) {
    super(
      `the object store at ${endpoint} presented a TLS certificate this process does not accept (${code}: ${cause.message}); ` +
        'trust the CA that signed it with NODE_EXTRA_CA_CERTS=<ca.pem> (read when the process starts), or give the endpoint a certificate for its host name from a trusted CA',
    );
    this.name = 'StoreTlsError';
  }
}
