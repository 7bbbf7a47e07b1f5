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
  | 'QUORUM_NOT_REACHED'
  | 'OUTCOME_UNKNOWN'
  | 'SIBLING_LIMIT'
  | 'UNAVAILABLE'
  | 'TIMEOUT'
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
 * - `TIMEOUT`: a read (get, clusterInfo) ran out of time. Writes never give it: a write that
 *   runs out of time gives `OUTCOME_UNKNOWN`.
 * - `MISSING_FIELD`: a malformed request, such as a `writeId` that is not 32 hex digits.
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
   * Who coordinates requests: "client" (the default: the client pulls the ring, reads each
   * key's replicas itself and sends writes straight to a replica) or "server" (every request
   * goes to one node, which coordinates it).
   */
  coordination?: 'client' | 'server';
}

/** The values of a key (several when concurrent writes happened) and one context for them all. */
export interface GetResult {
  /** Empty when the key does not exist or was deleted. */
  values: Buffer[];
  /** Opaque: hand it back unchanged with the put or delete that follows. */
  context: Buffer;
}

export interface ReadOptions {
  /** Read quorum for this call, 1..=N. */
  r?: number;
}

export interface WriteOptions {
  /** Write quorum for this call, 1..=N. */
  w?: number;
  /**
   * The write's id: 32 hex digits (16 bytes, big-endian). Left out, a fresh random one is
   * drawn. Give the `writeId` of an OUTCOME_UNKNOWN error to retry that write: one write id is
   * applied at most once, however often it is sent. Another string is refused with
   * MISSING_FIELD, another type with a TypeError; nothing is sent.
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
}

/** A DynamoKV client. Connections are made on first use; every call returns a Promise. */
export declare class Client {
  /**
   * @param seeds nodes to contact, each `"host:port"`
   * @throws {DynamoKVError} INVALID_CONFIG for no seeds, a malformed seed or a bad option
   */
  constructor(seeds: string[], options?: ClientOptions);
  /** Every concurrent value of `key` and one context covering them. */
  get(key: Bytes, options?: ReadOptions): Promise<GetResult>;
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
  /**
   * The client's own view of its seed nodes, one entry per seed in order: which answer and
   * which it avoids. Local state only: no I/O, so not a Promise.
   */
  nodeHealth(): NodeHealth[];
}
