/**
 * The object store (one bucket, docs/ARCHITECTURE.md "Object store layout") through the `minio`
 * client. Every blob is written with its sha256 in the object's metadata and checked on
 * load, so a flipped byte is detected rather than trained on.
 * Credentials come only from the environment or the credentials file infra/up writes.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as Minio from 'minio';
import { CorruptObjectError, MissingObjectError, StoreTlsError, TLS_CERT_CODES } from './errors';

export interface StoreConfig {
  /** e.g. http://127.0.0.1:7070 or https://s3.example.com */
  endpoint: string;
  accessKey: string;
  secretKey: string;
  bucket: string;
  region: string;
}

export const sha256Hex = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** Parse a KEY=VALUE file (the one infra/up writes), ignoring comments and blanks. */
export function readEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*([A-Z0-9_]+)\s*=\s*(.*)\s*$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** Data dir of the embedded servers (where infra/up writes ports and credentials). */
export const dataDir = (): string => process.env.E3_DATA_DIR ?? path.resolve(__dirname, '..', '.e3');

/** The code an error from the store's client carries (S3 error code, socket or TLS code), else its name. */
const errorCode = (e: unknown): string => String((e as { code?: unknown }).code ?? (e as Error)?.name ?? 'unknown');

/**
 * Store settings from the environment: E3_S3_ENDPOINT, E3_S3_ACCESS_KEY, E3_S3_SECRET_KEY
 * (or E3_S3_CREDENTIALS_FILE, default .e3/s3-credentials.env), E3_S3_BUCKET, E3_S3_REGION.
 */
export function storeConfigFromEnv(env: NodeJS.ProcessEnv = process.env): StoreConfig {
  let accessKey = env.E3_S3_ACCESS_KEY;
  let secretKey = env.E3_S3_SECRET_KEY;
  const credFile = env.E3_S3_CREDENTIALS_FILE ?? path.join(dataDir(), 's3-credentials.env');
  if ((!accessKey || !secretKey) && existsSync(credFile)) {
    const f = readEnvFile(credFile);
    accessKey ||= f.E3_S3_ACCESS_KEY;
    secretKey ||= f.E3_S3_SECRET_KEY;
  }
  if (!accessKey || !secretKey) {
    throw new Error(
      `S3 credentials missing: set E3_S3_ACCESS_KEY and E3_S3_SECRET_KEY, or E3_S3_CREDENTIALS_FILE (looked for ${credFile})`,
    );
  }
  const port = env.E3_S3_PORT ?? '7070';
  return {
    endpoint: env.E3_S3_ENDPOINT ?? `http://127.0.0.1:${port}`,
    accessKey,
    secretKey,
    bucket: env.E3_S3_BUCKET ?? 'e3-runs',
    region: env.E3_S3_REGION ?? 'us-east-1',
  };
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks);
}

const isNotFound = (e: unknown): boolean => {
  const code = (e as { code?: string }).code;
  return code === 'NoSuchKey' || code === 'NotFound' || code === 'NoSuchObject';
};

export class ObjectStore {
  readonly client: Minio.Client;
  readonly bucket: string;
  private bucketReady: Promise<void> | undefined;
  /** Told of every failed request (operation, error code): the worker counts them (activities/metrics.ts). Never throws into the store. */
  onError?: (op: string, code: string) => void;

  constructor(readonly cfg: StoreConfig) {
    const url = new URL(cfg.endpoint);
    this.client = new Minio.Client({
      endPoint: url.hostname,
      port: url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80,
      useSSL: url.protocol === 'https:',
      accessKey: cfg.accessKey,
      secretKey: cfg.secretKey,
      region: cfg.region,
      pathStyle: true,
    });
    this.bucket = cfg.bucket;
  }

  /**
   * One request: a failure other than a missing object is reported to onError, and a TLS
   * certificate failure becomes a StoreTlsError (non-retryable: activities/errors.ts).
   */
  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (isNotFound(e)) throw e;
      const code = errorCode(e);
      try {
        this.onError?.(op, code);
      } catch {
        /* observation only */
      }
      if (TLS_CERT_CODES.has(code)) throw new StoreTlsError(this.cfg.endpoint, code, e as Error);
      throw e;
    }
  }

  static fromEnv(): ObjectStore {
    return new ObjectStore(storeConfigFromEnv());
  }

  /** Create the bucket when missing (once per process). */
  ensureBucket(): Promise<void> {
    this.bucketReady ??= this.call('ensureBucket', async () => {
      if (!(await this.client.bucketExists(this.bucket))) {
        try {
          await this.client.makeBucket(this.bucket, this.cfg.region);
        } catch (e) {
          const code = (e as { code?: string }).code;
          if (code !== 'BucketAlreadyOwnedByYou' && code !== 'BucketAlreadyExists') throw e;
        }
      }
    }).catch((e) => {
      this.bucketReady = undefined;
      throw e;
    });
    return this.bucketReady;
  }

  /** Write a blob with its sha256 recorded in metadata; returns the digest. */
  async put(key: string, bytes: Uint8Array | string, contentType = 'application/octet-stream'): Promise<{ sha256: string; size: number }> {
    await this.ensureBucket();
    const buf = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const sha256 = sha256Hex(buf);
    await this.call('put', () =>
      this.client.putObject(this.bucket, key, buf, buf.length, { 'Content-Type': contentType, 'X-Amz-Meta-Sha256': sha256 }),
    );
    return { sha256, size: buf.length };
  }

  /**
   * Read a blob and check it against `expectedSha256` (when given) and the sha256 stored
   * in its metadata. Throws MissingObjectError / CorruptObjectError.
   */
  async get(key: string, expectedSha256?: string): Promise<Buffer> {
    await this.ensureBucket();
    let stat: Minio.BucketItemStat;
    let buf: Buffer;
    try {
      stat = await this.call('get', () => this.client.statObject(this.bucket, key));
      buf = await this.call('get', async () => readAll(await this.client.getObject(this.bucket, key)));
    } catch (e) {
      if (isNotFound(e)) throw new MissingObjectError(key);
      throw e;
    }
    const actual = sha256Hex(buf);
    const recorded = (stat.metaData?.sha256 as string | undefined) ?? expectedSha256;
    for (const want of [expectedSha256, recorded]) {
      if (want && want !== actual) throw new CorruptObjectError(key, want, actual);
    }
    return buf;
  }

  async putJson(key: string, value: unknown): Promise<{ sha256: string; size: number }> {
    return this.put(key, JSON.stringify(value, null, 1), 'application/json');
  }

  async getJson<T>(key: string, expectedSha256?: string): Promise<T> {
    const buf = await this.get(key, expectedSha256);
    try {
      return JSON.parse(buf.toString('utf8')) as T;
    } catch (e) {
      throw new CorruptObjectError(key, 'valid JSON', `unparseable (${(e as Error).message})`);
    }
  }

  async exists(key: string): Promise<boolean> {
    await this.ensureBucket();
    try {
      await this.call('exists', () => this.client.statObject(this.bucket, key));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  /** All keys under a prefix, sorted. */
  async list(prefix: string): Promise<string[]> {
    await this.ensureBucket();
    return this.call('list', async () => {
      const keys: string[] = [];
      for await (const item of this.client.listObjectsV2(this.bucket, prefix, true)) {
        if ((item as Minio.BucketItem).name) keys.push((item as Minio.BucketItem).name!);
      }
      return keys.sort();
    });
  }

  /** The next level of "folders" under a prefix (a delimiter listing: no recursion). */
  async listPrefixes(prefix: string): Promise<string[]> {
    await this.ensureBucket();
    return this.call('list', async () => {
      const out: string[] = [];
      for await (const item of this.client.listObjectsV2(this.bucket, prefix, false)) {
        const p = (item as { prefix?: string }).prefix;
        if (p) out.push(p);
      }
      return out.sort();
    });
  }

  async remove(keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    await this.ensureBucket();
    for (let i = 0; i < keys.length; i += 500)
      await this.call('remove', () => this.client.removeObjects(this.bucket, keys.slice(i, i + 500)));
  }
}
