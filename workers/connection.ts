/**
 * Where Temporal is: TEMPORAL_ADDRESS (or E3_TEMPORAL_ADDRESS, default 127.0.0.1:7233),
 * TEMPORAL_NAMESPACE (default "default"); for a remote cluster or Temporal Cloud,
 * TEMPORAL_API_KEY, or TEMPORAL_TLS_CERT / TEMPORAL_TLS_KEY (mTLS, file paths) and
 * TEMPORAL_TLS=1 for server TLS. Credentials come only from the environment or files.
 */
import { readFileSync } from 'node:fs';

export interface TemporalTarget {
  address: string;
  namespace: string;
  tls?: { clientCertPair?: { crt: Buffer; key: Buffer } } | boolean;
  apiKey?: string;
}

export function temporalTarget(env: NodeJS.ProcessEnv = process.env): TemporalTarget {
  const address = env.TEMPORAL_ADDRESS ?? env.E3_TEMPORAL_ADDRESS ?? `127.0.0.1:${env.E3_TEMPORAL_PORT ?? '7233'}`;
  const namespace = env.TEMPORAL_NAMESPACE ?? env.E3_NAMESPACE ?? 'default';
  const t: TemporalTarget = { address, namespace };
  if (env.TEMPORAL_TLS_CERT && env.TEMPORAL_TLS_KEY) {
    t.tls = { clientCertPair: { crt: readFileSync(env.TEMPORAL_TLS_CERT), key: readFileSync(env.TEMPORAL_TLS_KEY) } };
  } else if (env.TEMPORAL_TLS === '1' || env.TEMPORAL_API_KEY) {
    t.tls = true;
  }
  if (env.TEMPORAL_API_KEY) t.apiKey = env.TEMPORAL_API_KEY;
  return t;
}

export class ServersDownError extends Error {
  constructor(what: string, cause: unknown) {
    super(
      `${what} is not reachable (${(cause as Error)?.message ?? cause}). Start the embedded servers with \`npx e3 up\` (or \`bash infra/up\`), or point TEMPORAL_ADDRESS / E3_S3_ENDPOINT at running ones.`,
    );
    this.name = 'ServersDownError';
  }
}
