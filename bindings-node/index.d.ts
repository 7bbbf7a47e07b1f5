// Type declarations for the DynamoKV Node.js SDK (hand-written; test/types-check.ts keeps them
// honest against the facade in index.js).

/// <reference types="node" />

/** Anything accepted as a key or value: strings are encoded as UTF-8. */
export type Bytes = string | Buffer | Uint8Array;

/** The stable codes a {@link DynamoKVError} can carry. */
export type ErrorCodeName =
  | 'INVALID_CONFIG'
  | 'EMPTY_KEY'
  | 'KEY_TOO_LARGE'
  | 'VALUE_TOO_LARGE'
  | 'INVALID_CONTEXT'
  | 'INVALID_QUORUM'
  | 'MISSING_FIELD'
  | 'INVALID_INPUT'
  | 'QUORUM_NOT_REACHED'
  | 'OUTCOME_UNKNOWN'
  | 'SIBLING_LIMIT'
  | 'UNAVAILABLE'
  | 'OVERLOADED'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'TLS'
  | 'TIMEOUT'
  | 'RESOLVER_FAILED'
  | 'INTERNAL';

/** The codes as constants, e.g. `ErrorCode.KEY_TOO_LARGE`. */
export declare const ErrorCode: Readonly<{ [K in ErrorCodeName]: K }>;

/**
 * Every failure of a DynamoKV call. Only the fields that apply to `code` are set.
 *
 * - `OUTCOME_UNKNOWN`: a put or delete whose answer was lost; it was applied once or not at
 *   all. Read the key, or retry with `{ writeId: err.writeId }`: a write is never applied twice
 *   under one write id.
 * - `SIBLING_LIMIT`: a blind write (its context does not cover what the key holds) would grow
 *   the key past its sibling or size limit. Nothing was written: get the key and put the
 *   resolved value with the get's context.
 * - `OVERLOADED`: the nodes tried are at their cap of concurrent requests or connections and
 *   did nothing: retry later, with backoff.
 * - `UNAUTHENTICATED`: no credentials (`token`, or `clientCert` and `clientKey`), or ones the
 *   cluster does not accept. Nothing was done.
 * - `PERMISSION_DENIED`: the user lacks the permission the request needs (the message names
 *   it, with the key). Nothing was done.
 * - `TLS`: the TLS handshake failed; the message says which side refused and why.
 * - `TIMEOUT`: a read (get, clusterInfo) ran out of time. Writes never give it: a write that
 *   runs out of time gives `OUTCOME_UNKNOWN`.
 * - `MISSING_FIELD`: a request without a required field (a client bug).
 * - `INVALID_INPUT`: a malformed request field, such as a `writeId` that is not 32 hex digits.
 *   Nothing was done.
 * - `RESOLVER_FAILED`: a resolving get whose resolver failed: a built-in one (e.g.
 *   `resolvers.unionJson` over a value that is not a JSON array), or any resolver whose result
 *   cannot be stored (over the value limit). Nothing was written. A custom resolver that throws
 *   does not give this error: the call rejects with what it threw (see {@link CustomResolver}).
 */
export declare class DynamoKVError extends Error {
  readonly name: 'DynamoKVError';
  readonly code: ErrorCodeName;
  /** KEY_TOO_LARGE, VALUE_TOO_LARGE: the size that was refused, in bytes. */
  readonly size?: number;
  /** EMPTY_KEY, KEY_TOO_LARGE, VALUE_TOO_LARGE: the limit, in bytes. */
  readonly max?: number;
  /** QUORUM_NOT_REACHED: replicas needed. */
  readonly needed?: number;
  /** QUORUM_NOT_REACHED: replicas that answered. */
  readonly got?: number;
  /** TIMEOUT: the request deadline that passed, in milliseconds. */
  readonly afterMs?: number;
  /**
   * OUTCOME_UNKNOWN: the write's id, 32 lowercase hex digits (a 16-byte id, big-endian). Pass
   * it as `writeId` to retry the write.
   */
  readonly writeId?: string;
  constructor(
    code: ErrorCodeName,
    message: string,
    fields?: {
      size?: number;
      max?: number;
      needed?: number;
      got?: number;
      afterMs?: number;
      writeId?: string;
    },
    options?: ErrorOptions,
  );
}

/** Client options; any left out take the client core's defaults. */
export interface ClientOptions {
  /** Time allowed to connect to one node, in milliseconds. */
  connectTimeoutMs?: number;
  /** Deadline for a whole call, retries included, in milliseconds. */
  requestTimeoutMs?: number;
  /**
   * Time one node gets to answer one attempt, in milliseconds; left out, the whole request
   * timeout. A node silent for that long is marked down: the call goes on to another node,
   * later calls try it last, and a background probe brings it back once it answers.
   */
  attemptTimeoutMs?: number;
  /** How many further nodes to try when one cannot be reached (0 tries one node only). */
  maxRetries?: number;
  /** Largest key checked before sending, in bytes. */
  maxKeyBytes?: number;
  /** Largest value checked before sending, in bytes. */
  maxValueBytes?: number;
  /**
   * Who coordinates requests (paper 6.4). `'client'` (the default): the client pulls the ring,
   * reads each key from its replicas itself and sends each write straight to a replica of the
   * key. `'server'`: every request goes to one node (the seeds in turn), which coordinates it;
   * for clients that cannot reach every node directly. Another string is INVALID_CONFIG.
   */
  coordination?: Coordination;
  /** How often the client pulls the ring when nothing prompts it sooner, in ms (10000). */
  ringRefreshIntervalMs?: number;
  /**
   * Hedged reads: when a client-coordinated get has not had its R answers after this many
   * milliseconds, one more replica is asked and the first answers win. Left out or null: off.
   */
  hedgeAfterMs?: number | null;
  /** How many keys of one getMany / putMany are in flight at once (32). */
  batchConcurrency?: number;
  /**
   * The cluster's CA certificate, for a cluster that serves TLS: PEM text (string or Buffer)
   * or the path of a PEM file. With it every connection is TLS, and nodes must present a
   * certificate this CA signed. A failed handshake is a `TLS` error saying which side refused.
   */
  caCert?: string | Buffer;
  /** A client certificate (from `dynamokv cert user`): PEM text or path. Needs `clientKey`. */
  clientCert?: string | Buffer;
  /** The private key of `clientCert`: PEM text or path. */
  clientKey?: string | Buffer;
  /**
   * A token from `dynamokv admin user add`, instead of a client certificate. Sent only over
   * TLS: it needs `caCert`. An unknown or revoked token is `UNAUTHENTICATED`.
   */
  token?: string;
  /**
   * Certificate files given as paths are read again when a connection is made at least this
   * many milliseconds (2000) after they were last read, so certificates rotated on disk reach
   * a running client's next connection; 0 reads them for every new connection.
   */
  tlsReloadIntervalMs?: number;
}

/** Who coordinates a client's requests: see {@link ClientOptions.coordination}. */
export type Coordination = 'client' | 'server';

/** The values of a key (several when concurrent writes happened) and one context for them all. */
export interface GetResult {
  /** Empty when the key does not exist or was deleted. */
  values: Buffer[];
  /** Opaque: hand it back unchanged with the put or delete that follows. */
  context: Buffer;
  /**
   * The write time of each value, in milliseconds since the epoch by the clock of the node
   * that coordinated that write; same order as `values`.
   */
  timestampsMs: number[];
  /** Whether a delete is concurrent with the values. */
  tombstone: boolean;
}

/** What a custom resolver is told besides the values. */
export interface ResolverMeta {
  /** The key being resolved. */
  key: Buffer;
  /** The write time of each value (milliseconds since the epoch), same order as the values. */
  timestampsMs: number[];
  /** Whether a delete is concurrent with the values (resolving also supersedes it). */
  tombstone: boolean;
}

/**
 * An application's own resolver: turns a key's concurrent values (siblings, two or more,
 * oldest write first) into one. It may be async.
 *
 * - It throws or its Promise rejects: the get rejects with that very value (the same object,
 *   whatever was thrown), and nothing is written. In `getMany`, that key's item is
 *   `{ ok: false, error: <the same value> }` and the other keys are unaffected.
 * - It returns something that is not a `Buffer` or `Uint8Array` (a string included): the get
 *   rejects with a `TypeError`, and nothing is written.
 *
 * The request timeout does not bound the resolver itself: a Promise that never settles leaves
 * the get pending.
 */
export type CustomResolver = (
  values: Buffer[],
  meta: ResolverMeta,
) => Buffer | Uint8Array | Promise<Buffer | Uint8Array>;

declare const builtinResolver: unique symbol;

/** A resolver built into the client core (no JavaScript call): see {@link resolvers}. */
export interface BuiltinResolver {
  readonly [builtinResolver]: true;
  readonly name: 'lastWriterWins' | 'unionJson';
}

export type Resolver = BuiltinResolver | CustomResolver;

/**
 * The built-in resolvers. `lastWriterWins`: the value with the latest write timestamp (between
 * equal timestamps, the greatest bytes), so concurrent updates other than the latest are
 * dropped. `unionJson`: every value is a JSON array, the result their union, each distinct
 * element once, in order of first appearance (the paper's shopping cart: nothing added is
 * lost); a value that is not a JSON array fails it with RESOLVER_FAILED and nothing is written.
 */
export declare const resolvers: Readonly<{
  lastWriterWins: BuiltinResolver;
  unionJson: BuiltinResolver;
}>;

/** A get resolved to one value. */
export interface ResolvedResult {
  /** The one value: the only one, or the resolver's result; null when the key has none. */
  value: Buffer | null;
  /** Covers everything resolved (and the write-back): hand it to the next write of the key. */
  context: Buffer;
  /** How many concurrent values the get found (the resolver runs only for 2 or more). */
  siblings: number;
  /** Whether the resolved value was written back. */
  writtenBack: boolean;
}

export interface ReadOptions {
  /** Read quorum for this call, 1..=N. */
  r?: number;
}

/** A get that resolves the key's concurrent values to one. */
export interface ResolveOptions extends ReadOptions {
  /** A built-in from {@link resolvers}, or a {@link CustomResolver}. */
  resolver: Resolver;
  /**
   * Write the resolved value back under the context covering every value resolved, so the key
   * converges to one version on every replica (default true). Also done, without calling the
   * resolver, when one value is concurrent with a delete.
   */
  writeBack?: boolean;
}

/** One result of a batch: its value, or why that item failed. */
export type BatchResult<T, E = DynamoKVError> = BatchSuccess<T> | BatchFailure<E>;

export interface BatchSuccess<T> {
  ok: true;
  value: T;
}

export interface BatchFailure<E = DynamoKVError> {
  ok: false;
  /**
   * A DynamoKVError; with a custom resolver, also what it threw or the TypeError about what it
   * returned (see {@link CustomResolver}).
   */
  error: E;
}

/** One write of {@link Client.putMany}. */
export interface PutManyItem {
  key: Bytes;
  value: Bytes;
  /** The context of an earlier get of the key; left out for a blind write. */
  context?: Buffer | Uint8Array | null;
}

/** Options applied to every item of a {@link Client.putMany}; each item draws its own write id. */
export interface BatchWriteOptions {
  /** Write quorum, 1..=N. */
  w?: number;
  /** As {@link WriteOptions.syncReplicas}. */
  syncReplicas?: number;
}

export interface WriteOptions {
  /** Write quorum for this call, 1..=N. */
  w?: number;
  /**
   * The write's id: 32 hex digits (16 bytes, big-endian). Left out, a fresh random one is
   * drawn. Give the `writeId` of an OUTCOME_UNKNOWN error to retry that write: one write id is
   * applied at most once, however often it is sent. Another string is refused with
   * INVALID_INPUT, another type with a TypeError; nothing is sent.
   */
  writeId?: string;  /**
   * How many of the W acknowledging replicas fsync their write-ahead log before the write is
   * acknowledged, 0..=W. Left out, the cluster's `sync_replicas` setting (0 unless configured).
   * 0 survives a crash of any process; 1 or more also a power cut of every replica at once.
   * More than W is refused with INVALID_QUORUM and nothing is written.
   */
  syncReplicas?: number;
}

export interface MemberInfo {
  id: string;
  address: string;
  zone: string;
  weight: number;
}

/** Whether the client considers one of its seed nodes up (its own failure detector's view). */
export interface NodeHealth {
  /** The seed's `"host:port"`. */
  address: string;
  /** False once the node failed to answer in time; true again when a probe gets an answer. */
  up: boolean;
}

export interface ClusterInfo {
  clusterName: string;
  partitions: number;
  n: number;
  r: number;
  w: number;
  members: MemberInfo[];
  /** The id of the node that answered. */
  answeredBy: string;
  /** The version of the ring `members` make. */
  ringVersion: number;
}

/** A DynamoKV client. Connections are made on first use; every call returns a Promise. */
export declare class Client {
  /**
   * @param seeds nodes to contact, each `"host:port"`
   * @throws {DynamoKVError} INVALID_CONFIG for no seeds, a malformed seed or a bad option
   */
  constructor(seeds: string[], options?: ClientOptions);
  /**
   * A client that has reached the cluster: it pulled the ring (client-driven) or heard from a
   * node (server-driven).
   * @throws {DynamoKVError} UNAVAILABLE or TIMEOUT when no node answers
   */
  static connect(seeds: string[], options?: ClientOptions): Promise<Client>;
  /**
   * `key` resolved to one value by `options.resolver`, written back unless `writeBack` is
   * false. A custom resolver that throws makes this reject with what it threw, and nothing is
   * written (see {@link CustomResolver}).
   * @throws {DynamoKVError} RESOLVER_FAILED when a built-in fails or the result cannot be stored
   */
  get(key: Bytes, options: ResolveOptions): Promise<ResolvedResult>;
  /** Every concurrent value of `key`, their write times and one context covering them. */
  get(key: Bytes, options?: ReadOptions): Promise<GetResult>;
  /**
   * Many keys at once (at most `batchConcurrency` in flight): one result per key, in order;
   * one failing (an empty key, a resolver that throws) does not fail the others.
   */
  getMany(
    keys: Bytes[],
    options: ResolveOptions & { resolver: BuiltinResolver },
  ): Promise<BatchResult<ResolvedResult>[]>;
  getMany(keys: Bytes[], options: ResolveOptions): Promise<BatchResult<ResolvedResult, unknown>[]>;
  getMany(keys: Bytes[], options?: ReadOptions): Promise<BatchResult<GetResult>[]>;
  /**
   * Many puts at once: one result per item, in order, the new version's context when it
   * succeeded; one failing does not fail the others.
   */
  putMany(items: PutManyItem[], options?: BatchWriteOptions): Promise<BatchResult<Buffer>[]>;
  /**
   * Writes `value`. With the context of a get it supersedes exactly what that get saw; without
   * one it becomes a sibling of whatever is stored. Resolves to the new version's context.
   * @throws {DynamoKVError} OUTCOME_UNKNOWN when the answer was lost (retry with its
   *   `writeId`), SIBLING_LIMIT when a write without a covering context would grow the key
   *   past its limit
   */
  put(
    key: Bytes,
    value: Bytes,
    context?: Buffer | Uint8Array | null,
    options?: WriteOptions,
  ): Promise<Buffer>;
  /**
   * Deletes what `context` (from a get) saw of `key`. Resolves to the tombstone's context.
   * `options` and OUTCOME_UNKNOWN as for {@link Client.put}.
   */
  delete(key: Bytes, context: Buffer | Uint8Array, options?: WriteOptions): Promise<Buffer>;
  /** The cluster's membership and settings, as one node reports them. */
  clusterInfo(): Promise<ClusterInfo>;
  /** The version of the ring the client routes by; null before its first pull. No I/O. */
  ringVersion(): number | null;
  /** Pulls the ring now (client-driven); resolves to its version. */
  refreshRing(): Promise<number>;
  /** Who coordinates this client's requests. No I/O. */
  coordination(): Coordination;
  /**
   * The client's own view of its seed nodes, one entry per seed in order: which answer and
   * which it avoids. Local state only: no I/O, so not a Promise.
   */
  nodeHealth(): NodeHealth[];
}

/** A node of a membership, as {@link inspect.preferenceList} takes it. */
export interface InspectMember {
  id: string;
  address: string;
  /** Failure domain; left out or empty when zones are not used. */
  zone?: string;
  /** Capacity weight, at least 1 (1 when left out). */
  weight?: number;
}

export interface PreferenceList {
  /** The ids of the key's replicas, the partition's owner first. */
  replicas: string[];
  /** The ids of the fallbacks a sloppy quorum uses, in ring order. */
  fallbacks: string[];
}

/** One `(actor, counter)` entry of a version context. */
export interface ContextDot {
  actor: bigint;
  counter: bigint;
}

/** What a version context says. */
export interface ContextDescription {
  /** Every clock entry, in actor order: every event of the actor up to `counter` was seen. */
  clock: ContextDot[];
  /** Single events seen beyond their actor's entry, in order. */
  cloud: ContextDot[];
  /** The ids of the writes the read showed (32 lowercase hex digits each), increasing. */
  seenWrites: string[];
  /** The id of the replica that answered the read first, when the context records one. */
  fastestReplica: string | null;
}

/**
 * What the client computes with the shared code, as pure functions (no I/O), for conformance
 * tests against `conformance/vectors.json`. Applications have no need of them: contexts are
 * opaque and routing is the client's business.
 */
export declare const inspect: Readonly<{
  /** The key's ring position: its MD5 digest as a big-endian 128-bit integer. */
  keyPosition(key: Bytes): bigint;
  /**
   * The partition of `key` on a ring of `partitions` partitions.
   * @throws {DynamoKVError} INVALID_CONFIG unless `partitions` is a power of two, 1..=2^20
   */
  partitionOf(key: Bytes, partitions: number): number;
  /**
   * `key`'s replicas and fallbacks on the ring of `members` with `partitions` partitions and
   * `n` replicas (capped at the number of members).
   * @throws {DynamoKVError} INVALID_CONFIG for a membership that forms no ring, or `n` = 0
   */
  preferenceList(
    members: InspectMember[],
    partitions: number,
    key: Bytes,
    n: number,
  ): PreferenceList;
  /**
   * Decodes `context`, a context a get or put of `key` returned (empty: the empty context).
   * @throws {DynamoKVError} INVALID_CONTEXT for bytes that are not a context of `key`
   */
  describeContext(key: Bytes, context: Buffer | Uint8Array): ContextDescription;
}>;
