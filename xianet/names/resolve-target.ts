/** A command's target given as a DAG or as a name: names go to the name service. */
import { Dag } from '../../shared/dag.js';
import type { NodeApi } from '../api/node-api.js';
import { NameClient } from './name-client.js';

/** Whether a target is written as a DAG (else it is a name). */
export function isDagText(target: string): boolean {
  return /^\s*(RE|DAG)(\s|$)/.test(target);
}

export async function resolveTarget(target: string, api: NodeApi, nameServer?: string): Promise<Dag> {
  if (isDagText(target)) return Dag.parse(target);
  const client = new NameClient(api, { nameServer: nameServer ? Dag.parse(nameServer) : undefined });
  try {
    return (await client.resolve(target)).dag;
  } finally {
    await client.close();
  }
}
