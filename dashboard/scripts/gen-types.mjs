// Generates src/types/schema.ts from the metric event JSON Schema (`python -m llm.telemetry.schema`).
// `npm run gen:types`; tests/test_dashboard_types.py runs it into a temp dir and compares.
// Usage: node scripts/gen-types.mjs INPUT.json OUTPUT.ts
import { readFile, writeFile } from 'node:fs/promises'
import { compile } from 'json-schema-to-typescript'

const [input, output] = process.argv.slice(2)
if (!input || !output) {
  console.error('usage: node scripts/gen-types.mjs INPUT.json OUTPUT.ts')
  process.exit(2)
}
const schema = JSON.parse(await readFile(input, 'utf8'))
const banner =
  '/* Generated from metric-event.schema.json (python -m llm.telemetry.schema) by\n' +
  ' * json-schema-to-typescript: do not edit, run `npm run gen:types`. */'
const ts = await compile(schema, 'MetricEventSchema', { bannerComment: banner, additionalProperties: false })
await writeFile(output, ts)
