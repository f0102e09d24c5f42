import { Command, Option } from 'commander';
import { Dag } from '../shared/dag.js';
import { XmigError } from '../shared/errors.js';

export type DagFormat = 're' | 'dag' | 'json';

/** Parses a DAG in either text form and prints it in the requested one. */
export function formatDag(text: string, format: DagFormat): string {
  const dag = Dag.parse(text);
  switch (format) {
    case 'dag':
      return dag.toDagString();
    case 'json':
      return JSON.stringify(dag.toJSON(), null, 2);
    case 're': {
      const re = dag.toRe();
      if (re === undefined) {
        throw new XmigError('ERR_DAG_INVALID', 'this DAG has no route-expression form; use --format dag');
      }
      return re;
    }
  }
}

export function dagCommand(): Command {
  return new Command('dag')
    .description('parse and validate a DAG address, and print it in another form')
    .argument('<dag>', 'the address: "RE ..." or "DAG ..." (quote it)')
    .addOption(new Option('-f, --format <format>', 'output form').choices(['re', 'dag', 'json']).default('re'))
    .action((text: string, options: { format: DagFormat }) => {
      process.stdout.write(`${formatDag(text, options.format)}\n`);
    });
}
