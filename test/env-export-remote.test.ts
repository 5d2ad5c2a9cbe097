// berth env export / import across joined runners (test/cluster.ts): an environment on one
// runner is exported (its state streamed over that runner's connection) and imported onto
// another (streamed over its connection), with the same files, owners and modes.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startCluster, type Cluster } from './cluster.ts';
import { ON_POSTGRES } from './postgres.ts';

const TREE = "find /workspace -printf '%p %U:%G %m %y %l\\n' | sort; sha256sum /workspace/data";

describe('export on one joined runner, import on another', { skip: !ON_POSTGRES && 'joined runners in namespaces (test/cluster.ts) need PostgreSQL: runs in the PostgreSQL suite', timeout: 900_000 }, () => {
  let c: Cluster;
  before(async () => {
    c = await startCluster({ replicas: 1, runners: 2, labels: (i) => `side=r${i}` });
    await c.connected();
  });
  after(async () => {
    await c?.close();
  });

  test('the state streams out of runner 0 and into runner 1: the same tree, owners and modes', async () => {
    const r = c.replicas[0]!;
    const exec = async (env: string, script: string) => {
      const res = await r.api('POST', `/api/orgs/default/environments/${env}/exec`, { cmd: ['sh', '-c', script] });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.exitCode, 0, res.body.stderr);
      return res.body.stdout as string;
    };
    const made = await r.api('POST', '/api/orgs/default/environments', { name: 'far', runnerLabels: { side: 'r0' } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    await exec(made.body.id, 'mkdir -p /workspace && head -c 3000000 /dev/urandom > /workspace/data && echo x > /workspace/u && chown 1000:1000 /workspace/u && chmod 600 /workspace/u && ln -s data /workspace/l');
    const tree = await exec(made.body.id, TREE);

    const headers = { authorization: `Bearer ${r.client.token}` };
    const exported = await fetch(`${r.client.url}/api/orgs/default/environments/far/export`, { headers });
    assert.equal(exported.status, 200, await exported.clone().text());
    const archive = new Uint8Array(await exported.arrayBuffer());
    assert.ok(archive.length > 3_000_000);

    const imported = await fetch(`${r.client.url}/api/orgs/default/environments/import?name=near&runnerLabels=${encodeURIComponent('{"side":"r1"}')}`, { method: 'POST', headers: { ...headers, 'content-type': 'application/x-tar' }, body: archive });
    const body = (await imported.json()) as any;
    assert.equal(imported.status, 201, JSON.stringify(body));
    assert.notEqual(body.runnerId, made.body.runnerId);
    assert.equal(body.runnerName, c.runners[1]!.name);
    assert.equal(await exec(body.id, TREE), tree);
  });
});
