// Compiled with `tsc --noEmit` (scripts/test.sh), never run: uses the API as a TypeScript user
// would, so index.d.ts cannot drift from index.js unnoticed. `@ts-expect-error` lines assert
// that misuse is rejected.
import {
  BatchResult,
  BuiltinResolver,
  Client,
  ClientOptions,
  ClusterInfo,
  ContextDescription,
  Coordination,
  CustomResolver,
  DynamoKVError,
  ErrorCode,
  GetResult,
  inspect,
  NodeHealth,
  PreferenceList,
  ResolvedResult,
  Resolver,
  ResolverMeta,
  resolvers,
  WriteOptions,
} from '..';

async function demo(): Promise<void> {
  const options: ClientOptions = { connectTimeoutMs: 500, requestTimeoutMs: 1000, maxRetries: 0 };
  const client = new Client(['127.0.0.1:7070'], options);
  new Client(['127.0.0.1:7070'], { maxKeyBytes: 8192, maxValueBytes: 2 << 20 });
  new Client(['127.0.0.1:7070']);
  new Client(['127.0.0.1:7070'], { coordination: 'server' });
  new Client(['127.0.0.1:7070'], { requestTimeoutMs: 5000, attemptTimeoutMs: 1500 });
  const health: NodeHealth[] = client.nodeHealth();
  for (const h of health) {
    const row: [string, boolean] = [h.address, h.up];
    void row;
  }

  const ctx0: Buffer = await client.put('cart:1', 'apple');
  await client.put(Buffer.from('cart:1'), Buffer.from('pear'), ctx0, { w: 1 });
  await client.put(new Uint8Array([1, 2]), new Uint8Array([3]), null);
  const got: GetResult = await client.get('cart:1', { r: 1 });
  const first: Buffer | undefined = got.values[0];
  const text: string | undefined = first?.toString('utf8');
  const tomb: Buffer = await client.delete('cart:1', got.context, { w: 1 });
  await client.delete('cart:1', tomb);
  const writeOptions: WriteOptions = { w: 1, writeId: '0123456789abcdef0123456789abcdef' };
  await client.put('cart:1', 'plum', got.context, writeOptions);
  await client.delete('cart:1', got.context, { writeId: '0123456789abcdef0123456789abcdef' });
  const synced: WriteOptions = { w: 2, syncReplicas: 1 };
  await client.put('cart:1', 'plum', got.context, synced);
  await client.delete('cart:1', got.context, { syncReplicas: 0 });

  const info: ClusterInfo = await client.clusterInfo();
  const line: [string, number, number, number, number, string] = [
    info.clusterName,
    info.partitions,
    info.n,
    info.r,
    info.w,
    info.answeredBy,
  ];
  for (const m of info.members) {
    const row: [string, string, string, number] = [m.id, m.address, m.zone, m.weight];
    void row;
  }
  void text;
  void line;

  try {
    await client.get('');
  } catch (e) {
    if (e instanceof DynamoKVError) {
      const code: string = e.code;
      const sizes: (number | undefined)[] = [e.size, e.max, e.needed, e.got, e.afterMs];
      if (e.code === ErrorCode.QUORUM_NOT_REACHED) void sizes;
      void code;
    }
  }

  // The retry an OUTCOME_UNKNOWN error calls for; SIBLING_LIMIT asks for a read and a resolve.
  try {
    await client.put('cart:1', 'plum');
  } catch (e) {
    if (e instanceof DynamoKVError && e.code === ErrorCode.OUTCOME_UNKNOWN) {
      const id: string | undefined = e.writeId;
      await client.put('cart:1', 'plum', null, { writeId: id });
    } else if (e instanceof DynamoKVError && e.code === 'SIBLING_LIMIT') {
      const { context } = await client.get('cart:1');
      await client.put('cart:1', 'plum', context);
    }
  }
  const made = new DynamoKVError('OUTCOME_UNKNOWN', 'lost', { writeId: 'ab'.repeat(16) });
  void made;

  // @ts-expect-error keys are strings or bytes
  await client.get(42);
  // @ts-expect-error delete needs the context of a get
  await client.delete('cart:1');
  // @ts-expect-error quorum options are numbers
  await client.get('cart:1', { r: '2' });
  // @ts-expect-error an unknown option
  new Client(['127.0.0.1:7070'], { requestTimeout: 5 });
  // @ts-expect-error nodeHealth is not a Promise
  await client.nodeHealth().then(() => undefined);
  // @ts-expect-error seeds are a list
  new Client('127.0.0.1:7070');
  // @ts-expect-error codes are a closed set
  const bad: DynamoKVError['code'] = 'NOPE';
  void bad;
  // @ts-expect-error a writeId is the hex string of an error's writeId, not bytes
  await client.put('cart:1', 'plum', null, { writeId: Buffer.alloc(16) });
  // @ts-expect-error syncReplicas is a number
  await client.put('cart:1', 'plum', null, { syncReplicas: '1' });
  // @ts-expect-error writeId is read-only on errors
  made.writeId = '00';
}

void demo;

// Client-driven coordination, resolvers, batches and the conformance helpers.
async function demoResolvers(): Promise<void> {
  const options: ClientOptions = {
    coordination: 'client',
    ringRefreshIntervalMs: 10000,
    hedgeAfterMs: 50,
    batchConcurrency: 32,
    tlsReloadIntervalMs: 2000,
  };
  new Client(['127.0.0.1:7070'], { coordination: 'server', hedgeAfterMs: null });
  const client: Client = await Client.connect(['127.0.0.1:7070'], options);
  const coordination: Coordination = client.coordination();
  const version: number | null = client.ringVersion();
  const pulled: number = await client.refreshRing();
  const ringVersion: number = (await client.clusterInfo()).ringVersion;
  void [coordination, version, pulled, ringVersion];

  // A plain get also carries the siblings' write times and the tombstone flag.
  const got: GetResult = await client.get('cart:1');
  const times: number[] = got.timestampsMs;
  const deleted: boolean = got.tombstone;
  void [times, deleted];

  // Built-in resolvers.
  const lww: BuiltinResolver = resolvers.lastWriterWins;
  const union: Resolver = resolvers.unionJson;
  const name: 'lastWriterWins' | 'unionJson' = lww.name;
  const merged: ResolvedResult = await client.get('cart:1', { resolver: union });
  const value: Buffer | null = merged.value;
  const count: number = merged.siblings;
  const wrote: boolean = merged.writtenBack;
  await client.put('cart:1', '["milk"]', merged.context);
  await client.get('cart:1', { r: 2, resolver: lww, writeBack: false });
  void [name, value, count, wrote];

  // Custom resolvers: sync or async, Buffer or Uint8Array.
  const concat: CustomResolver = (values: Buffer[], meta: ResolverMeta) => {
    const key: Buffer = meta.key;
    const latest: number = Math.max(...meta.timestampsMs);
    const tomb: boolean = meta.tombstone;
    void [key, latest, tomb];
    return Buffer.concat(values);
  };
  await client.get('cart:1', { resolver: concat });
  await client.get('cart:1', { resolver: async (values) => values[0] ?? Buffer.alloc(0) });
  await client.get('cart:1', { resolver: (values) => new Uint8Array(values.length) });
  try {
    await client.get('cart:1', {
      resolver: () => {
        throw new RangeError('cannot merge');
      },
    });
  } catch (e) {
    // The resolver's own error, or a DynamoKVError (e.g. RESOLVER_FAILED from a built-in).
    if (e instanceof RangeError) void e.message;
    else if (e instanceof DynamoKVError && e.code === ErrorCode.RESOLVER_FAILED) void e.message;
  }

  // Batches.
  const gets: BatchResult<GetResult>[] = await client.getMany(['a', Buffer.from('b')], { r: 2 });
  for (const item of gets) {
    if (item.ok) {
      const vs: Buffer[] = item.value.values;
      void vs;
    } else {
      const code: string = item.error.code;
      void code;
    }
  }
  const builtin: BatchResult<ResolvedResult>[] = await client.getMany(['a'], {
    resolver: resolvers.unionJson,
  });
  for (const item of builtin) if (!item.ok) void item.error.code;
  const custom: BatchResult<ResolvedResult, unknown>[] = await client.getMany(['a'], {
    resolver: concat,
    writeBack: false,
  });
  for (const item of custom) {
    if (item.ok) void (item.value.value satisfies Buffer | null);
    else if (item.error instanceof DynamoKVError) void item.error.code;
  }
  const puts: BatchResult<Buffer>[] = await client.putMany(
    [
      { key: 'a', value: '1' },
      { key: Buffer.from('b'), value: new Uint8Array([2]), context: got.context },
      { key: 'c', value: '3', context: null },
    ],
    { w: 2, syncReplicas: 1 },
  );
  for (const item of puts) if (item.ok) await client.put('a', '4', item.value);

  // Conformance helpers.
  const position: bigint = inspect.keyPosition('cart:1');
  const partition: number = inspect.partitionOf(Buffer.from('cart:1'), 1024);
  const list: PreferenceList = inspect.preferenceList(
    [
      { id: 'a', address: '10.0.0.1:7070', zone: 'z1', weight: 2 },
      { id: 'b', address: '10.0.0.2:7070' },
    ],
    64,
    'cart:1',
    3,
  );
  const ids: string[] = [...list.replicas, ...list.fallbacks];
  const described: ContextDescription = inspect.describeContext('cart:1', got.context);
  const actor: bigint | undefined = described.clock[0]?.actor;
  const fastest: string | null = described.fastestReplica;
  const writes: string[] = described.seenWrites;
  void [position, partition, ids, actor, fastest, writes, described.cloud];

  // @ts-expect-error coordination is 'client' or 'server'
  new Client(['127.0.0.1:7070'], { coordination: 'peer' });
  // @ts-expect-error hedgeAfterMs is in milliseconds, a number
  new Client(['127.0.0.1:7070'], { hedgeAfterMs: '50' });
  // @ts-expect-error a resolver returns bytes, not a string
  await client.get('cart:1', { resolver: () => 'merged' });
  // @ts-expect-error built-ins are resolvers.lastWriterWins / resolvers.unionJson, not names
  await client.get('cart:1', { resolver: 'unionJson' });
  // @ts-expect-error a look-alike object is not a built-in resolver
  await client.get('cart:1', { resolver: { name: 'unionJson' } });
  // @ts-expect-error a resolved value may be null
  const notNull: Buffer = merged.value;
  // @ts-expect-error a plain get has no single value
  void (await client.get('cart:1')).value;
  // @ts-expect-error writeBack is a boolean
  await client.get('cart:1', { resolver: union, writeBack: 1 });
  // @ts-expect-error putMany takes { key, value } items
  await client.putMany([['a', '1']]);
  // @ts-expect-error a batch put has no single write id
  await client.putMany([{ key: 'a', value: '1' }], { writeId: '00' });
  // @ts-expect-error ringVersion is not a Promise
  await client.ringVersion().then(() => undefined);
  // @ts-expect-error a failed item has no value
  void gets[0].value;
  // @ts-expect-error positions are bigints
  const asNumber: number = inspect.keyPosition('k');
  // @ts-expect-error the built-ins are read-only
  resolvers.unionJson = concat;
  void [notNull, asNumber];
}

void demoResolvers;
