// `berth project check NAME`: the build log as it happens (stderr), then the image (stdout).
import type { ApiClient } from '../client.ts';
import { CliError, printJson } from '../output.ts';

interface CheckResult {
  image: string | null;
  digest: string | null;
  reused: boolean;
}

export async function checkProject(client: ApiClient, name: string, o: { json?: boolean }): Promise<void> {
  const res = await client.fetch(client.orgPath(`projects/${encodeURIComponent(name)}/check`), { method: 'POST', headers: { accept: 'text/event-stream' } });
  // Loaded here, not at the top: only streaming commands need it.
  const { createParser } = await import('eventsource-parser');
  let result: CheckResult | undefined;
  let failure: { kind: string; message: string } | undefined;
  const parser = createParser({
    onEvent: (m) => {
      const data = JSON.parse(m.data) as Record<string, unknown>;
      if (m.event === 'log') process.stderr.write(`${String(data.line)}\n`);
      else if (m.event === 'result') result = data as unknown as CheckResult;
      else if (m.event === 'error') failure = (data as { error: { kind: string; message: string } }).error;
    },
  });
  const decoder = new TextDecoder();
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
  if (failure) throw new CliError(failure.message, 1);
  if (!result) throw new CliError('the build log ended without a result: the server may have restarted; run `berth project check` again', 1);
  if (o.json) return printJson(result);
  if (result.image === null) process.stdout.write(`${name}: nothing to build (its tasks run an image as it is)\n`);
  else process.stdout.write(`${name}: image ${result.image} (${result.digest?.slice(0, 19)}), ${result.reused ? 'unchanged since it was built' : 'built'}\n`);
}
