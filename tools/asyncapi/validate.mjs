// Validates an AsyncAPI document (default: docs/contracts/asyncapi.yaml) with the official
// parser, resolving its relative $refs from the file's own directory. Prints every diagnostic
// and exits 1 when any has severity error, or when a message's schemaFormat is one the parser
// has no schema parser for (it skips those schemas silently, so they would go unchecked).
// Usage: node tools/asyncapi/validate.mjs [path]
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';

const here = dirname(fileURLToPath(import.meta.url));
const path = resolve(process.argv[2] ?? resolve(here, '../../docs/contracts/asyncapi.yaml'));
const severities = ['error', 'warning', 'information', 'hint'];

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
let errors = 0;
for (const d of diagnostics) {
  const at = d.path?.length ? ` at ${d.path.join('.')}` : '';
  console.log(`${severities[d.severity] ?? d.severity}: ${d.code}: ${d.message}${at}`);
  if (d.severity === DiagnosticSeverity.Error) errors += 1;
}
for (const message of document?.allMessages() ?? []) {
  const format = message.schemaFormat();
  if (format && !parser.parserRegistry.has(format)) {
    console.log(`error: message ${message.id()}: no schema parser for schemaFormat ${format}`);
    errors += 1;
  }
}
if (!document || errors) {
  console.log(`asyncapi: ${path}: ${errors} error(s)`);
  process.exit(1);
}
console.log(`asyncapi: ${path}: valid (${diagnostics.length} diagnostic(s) below error)`);
