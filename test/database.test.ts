// One dialect, one set of migrations: PGlite in the data dir and a PostgreSQL server.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { openDatabase } from '../src/server/db/index.ts';
import { migrations } from '../src/server/db/migrations.ts';
import { freshDatabase, POSTGRES_SERVER, postgresReachable } from './postgres.ts';

const server = await postgresReachable();
const TABLES = ['audit_entries', 'audit_heads', 'campaign_targets', 'campaigns', 'environment_shares', 'environments', 'integrations', 'invites', 'memberships', 'models', 'network_events', 'network_policies', 'orgs', 'prebuilds', 'projects', 'runner_tokens', 'runners', 'schedule_firings', 'schedules', 'secrets', 'snapshots', 'task_events', 'tasks', 'tokens', 'users', 'webhook_deliveries', 'webhook_triggers'];

async function tables(db: Awaited<ReturnType<typeof openDatabase>>['db']): Promise<string[]> {
  const rows = await db.introspection.getTables();
  return rows.map((t) => t.name).sort();
}

describe('database', () => {
  test('PGlite: migrations run at start, and again is a no-op', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'berth-db-'));
    try {
      const first = await openDatabase({ dataDir: dir });
      assert.deepEqual(await tables(first.db), TABLES);
      await first.db.insertInto('orgs').values({ id: 'org_1', name: 'one' }).execute();
      await first.close();
      const second = await openDatabase({ dataDir: dir });
      assert.equal((await second.db.selectFrom('orgs').selectAll().execute()).length, 1);
      await second.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('PostgreSQL: two replicas starting together run each migration once', { skip: server ? false : `no PostgreSQL at ${POSTGRES_SERVER}` }, async () => {
    const database = await freshDatabase();
    try {
      const [a, b] = await Promise.all([openDatabase({ dataDir: '', databaseUrl: database.url }), openDatabase({ dataDir: '', databaseUrl: database.url })]);
      assert.equal(a.kind, 'postgres');
      assert.deepEqual(await tables(a.db), TABLES);
      const applied = await a.db.selectFrom('kysely_migration' as never).selectAll().execute();
      assert.equal(applied.length, Object.keys(migrations).length);
      await Promise.all([a.close(), b.close()]);
    } finally {
      await database.drop();
    }
  });
});

