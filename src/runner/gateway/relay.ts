// The way into the gateway from an environment, which has no network: the agent binary
// in relay mode (agent.c) listens on the environment's loopback and forwards each
// connection to the gateway's unix socket in the environment's agent directory.
import type { RunningCommand } from '../exec.ts';
import { AGENT_DIR, INIT_PATH } from '../bundle.ts';

/** The loopback port agents inside an environment reach the gateway on (below Linux's ephemeral range). */
export const RELAY_PORT = 7411;

/** The gateway's socket in an environment's agent directory (on the host: LocalRunner.agentDir(id)). */
export const GATEWAY_SOCKET_NAME = 'llm.sock';

/** The argv that starts the relay inside an environment whose PID 1 is the Berth agent. */
export function relayCommand(socketPathInside = `${AGENT_DIR}/${GATEWAY_SOCKET_NAME}`, port = RELAY_PORT): string[] {
  return [INIT_PATH, '--relay', `127.0.0.1:${port}`, socketPathInside];
}

/** The variables that point an agent CLI (OpenAI's and Anthropic's SDKs, and tools built on them) at the gateway. */
export function gatewayEnv(token: string, port = RELAY_PORT): Record<string, string> {
  const base = `http://127.0.0.1:${port}`;
  return {
    OPENAI_BASE_URL: `${base}/openai/v1`,
    OPENAI_API_KEY: token,
    ANTHROPIC_BASE_URL: `${base}/anthropic`,
    ANTHROPIC_API_KEY: token,
  };
}

/**
 * Resolves once a started relay accepts connections; rejects with its message if it
 * exits first (say, the port is taken) or takes longer than `timeoutMs`. Its output
 * is read from then on, so a message it prints later never blocks it.
 */
export function relayReady(relay: RunningCommand, timeoutMs = 10_000): Promise<void> {
  let stdout = '';
  let stderr = '';
  relay.stdin.end();
  relay.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4096)));
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the LLM gateway relay did not start within ${timeoutMs} ms${stderr ? `: ${stderr.trim()}` : ''}`)), timeoutMs);
    relay.stdout.on('data', (b: Buffer) => {
      if (stdout.includes('\n')) return;
      stdout += b.toString();
      if (/^listening on /.test(stdout) && stdout.includes('\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    // Its end, or its runner going away, after it was ready is the task's gateway closing, not this call's.
    void relay.exited.then(
      ({ exitCode }) => {
        clearTimeout(timer);
        reject(new Error(`the LLM gateway relay exited (${exitCode})${stderr ? `: ${stderr.trim()}` : ''}`));
      },
      (err: Error) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
