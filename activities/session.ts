/**
 * Trainer sessions (docs/ARCHITECTURE.md "One RL iteration"): open one on this worker (the
 * node's last commit, else its start policy, replicated on the compute pool), close it, and
 * commit its state as a checkpoint.
 */
import type { RlNode, SftNode } from '../configs/schema';
import { PooledTrainer } from '../compute/pool';
import { commitCheckpoint as commit, loadCheckpoint } from '../storage/checkpoints';
import { sha256Hex } from '../storage/store';
import type { NodeInput, Session } from './types';
import type { Env } from './env';
import { atStep, checkBackend, modelConfig, runLabels, withHeartbeat } from './env';
import { since } from './metrics';
import { usesReference } from '../ml/grpo';

export function trainerSessionActivities(env: Env) {
  const { ctx, store, sessions, evictable, sessionsChanged, sessionKey, computePool, nextOpenSeq, readManifest, startWeights, live } = env;
  return {
    /** Open a trainer session on this worker: load the node's last commit, else its start policy. */
    async openTrainer(input: NodeInput): Promise<Session> {
      // Heartbeats throughout: loading and replicating wait behind other sessions' jobs on a busy pool.
      return withHeartbeat(
        () => ({ opening: input.nodeId }),
        async (signal) => {
          const m = await readManifest(input.runId);
          checkBackend(m, ctx.backend, `opening a trainer session for ${input.nodeId}`);
          const cfg = m.config;
          const node = cfg.nodes[input.nodeId] as RlNode | SftNode;
          const key = sessionKey(input.runId, input.nodeId);
          // A re-open replaces this node's session; other sessions are evicted once abandoned. Never
          // under an activity still computing on one (its workflow gave up on it, it has not
          // noticed yet): the old replicas are freed when that activity stops, at its next step
          // boundary, and the new session has replicas of its own (a new pool key) meanwhile.
          for (const [k, l] of sessions) {
            if (k === key || evictable(l)) {
              sessions.delete(k);
              void l.trainer.dispose();
            }
          }
          // Sessions a worker holds at once (E3_TRAINER_SESSIONS). The worker polls the trainer
          // queue only while it has a free slot (workers/admission.ts), so opens wait in the task
          // queue in arrival order (within a priority) and are not refused; a worker without that
          // admission (one built by other code) still refuses when full, and the retry goes elsewhere.
          if (sessions.size >= (ctx.maxSessions ?? 1)) {
            throw new Error(`trainer ${ctx.queue} is busy with session ${[...sessions.keys()].join(', ')}; retrying`);
          }
          const own = await loadCheckpoint(store, input.runId, input.nodeId, (step, err) =>
            ctx.log(`checkpoint ${key}@${step} rejected, trying the previous commit: ${err}`),
          );
          const start = node.kind === 'rl' || !own ? await startWeights(m, input.nodeId) : undefined;
          const trainer = await PooledTrainer.open(await computePool(), `${key}#${nextOpenSeq()}`, {
            model: modelConfig(cfg),
            weights: own ? own.files['weights.bin'] : start,
            optimState: own ? own.files['optim.bin'] : undefined,
            refWeights: node.kind === 'rl' && usesReference(node.grpo) ? start : undefined,
            optim: node.optim,
            toolArithmetic: cfg.toolArithmetic,
            engine: cfg.engine,
            // A warm start from a shorter-context policy trains the new positions (see growContext).
            growContext: node.kind === 'sft' && !own,
          });
          const step = own ? own.manifest.step : 0;
          const was = own?.manifest.meta.backend;
          if (typeof was === 'string' && was !== ctx.backend) {
            ctx.log(
              `warning: ${key}@${step} was committed on the ${was} backend, resuming on ${ctx.backend}: the run stays valid but is no longer byte-identical to an uninterrupted one (pin E3_BACKEND)`,
            );
          }
          // Cancelled while loading (the activity already gave up): no workflow will use this session.
          if (signal?.aborted) {
            void trainer.dispose();
            throw Object.assign(new Error(`open ${key}: cancelled`), { name: 'CancelledError' });
          }
          // Another open of the node finished meanwhile (a retry that overlapped this attempt): replace it.
          const other = sessions.get(key);
          if (other) void other.trainer.dispose();
          // Off-policy fan-out: the commit records the policy its next iteration's parts come from.
          const sampler = own ? (JSON.parse(own.files['state.json'].toString('utf8')) as { sampler?: string }).sampler : undefined;
          sessions.set(key, {
            trainer,
            runId: input.runId,
            node: input.nodeId,
            step,
            config: cfg,
            lastUsed: Date.now(),
            ...(sampler ? { sampler: { t: step, sha256: sampler } } : {}),
          });
          env.metrics.opened(runLabels(input.runId, input.nodeId, cfg), Boolean(own), node.kind === 'sft' ? 'sft' : 'rl');
          sessionsChanged();
          ctx.log(`session ${key} opened on ${ctx.queue} at step ${step}${own ? '' : ' (fresh)'}`);
          return { runId: input.runId, nodeId: input.nodeId, queue: ctx.queue, step };
        },
      );
    },
    async closeTrainer(s: Session): Promise<void> {
      const key = sessionKey(s.runId, s.nodeId);
      const l = sessions.get(key);
      sessions.delete(key);
      sessionsChanged();
      // Freed at once (heartbeating: the close waits behind other sessions' jobs on a busy
      // pool), or, when an activity still computes on it, once that activity stops.
      const freed = l?.trainer.dispose();
      if (l && !l.trainer.busy)
        await withHeartbeat(
          () => ({ closing: s.nodeId }),
          () => freed!,
        );
    },
    /** Commit the session's state at `step` (blobs, manifest, then LATEST). */
    async commitCheckpoint(s: Session, step: number, metrics: Record<string, number> = {}): Promise<{ step: number; sha256: string }> {
      // Heartbeats throughout: the snapshot waits behind other sessions' jobs on a busy pool, and
      // a commit that did not heartbeat would be taken for a lost session under load.
      return withHeartbeat(
        () => ({ committing: step }),
        async () => {
          const l = live(s);
          atStep(s, l, step, 'commit');
          const m = { config: l.config };
          const t0 = performance.now();
          const { weights, optim } = await l.trainer.snapshot();
          const state = {
            step,
            cursor: step,
            backend: ctx.backend,
            node: s.nodeId,
            config: m.config,
            ...(l.sampler?.t === step ? { sampler: l.sampler.sha256 } : {}),
          };
          const score = metrics['train/reward_mean'];
          await commit(
            store,
            s.runId,
            s.nodeId,
            step,
            { 'weights.bin': weights, 'optim.bin': optim, 'state.json': JSON.stringify(state) },
            { config: m.config, backend: ctx.backend, metrics },
            {
              ...(Number.isFinite(score) ? { score } : {}),
              retention: { keepLast: m.config.keepLast, keepBest: true },
            },
          );
          env.metrics.checkpoint(
            runLabels(s.runId, s.nodeId, l.config),
            weights.length + optim.length + Buffer.byteLength(JSON.stringify(state)),
            since(t0),
          );
          return { step, sha256: sha256Hex(weights) };
        },
      );
    },
  };
}
