// The suite runs twice: on the embedded database, and with BERTH_TEST_DATABASE=postgres
// on a PostgreSQL server, each control plane on a database of its own.
import pg from 'pg';

export const POSTGRES_SERVER = process.env.BERTH_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const ON_POSTGRES = process.env.BERTH_TEST_DATABASE === 'postgres';

let counter = 0;

/** Creates a fresh database on the test server; returns its URL and a function that drops it. */
export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

export async function freshDatabase(): Promise<TestDatabase> {
  const name = `berth_test_${process.pid}_${Date.now()}_${counter++}`;
  const admin = new pg.Client({ connectionString: POSTGRES_SERVER });
  await admin.connect();
  try {
    await admin.query(`create database ${name}`);
  } finally {
    await admin.end();
  }
  return {
    url: POSTGRES_SERVER.replace(/\/[^/]*$/, `/${name}`),
    async drop() {
      const c = new pg.Client({ connectionString: POSTGRES_SERVER });
      await c.connect();
      try {
        await c.query(`drop database if exists ${name} with (force)`);
      } finally {
        await c.end();
      }
    },
  };
}

export async function postgresReachable(): Promise<boolean> {
  const client = new pg.Client({ connectionString: POSTGRES_SERVER, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.end();
    return true;
  } catch {
    return false;
  }
}
