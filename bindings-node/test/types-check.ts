// Compiled with `tsc --noEmit` (scripts/test.sh), never run: uses the API as a TypeScript user
// would, so index.d.ts cannot drift from index.js unnoticed. `@ts-expect-error` lines assert
// that misuse is rejected.
import {
  Client,
  ClientOptions,
  ClusterInfo,
  DynamoKVError,
  ErrorCode,
  GetResult,
  NodeHealth,
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
