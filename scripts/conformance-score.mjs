// Scores results of the HTTP caching test suite (http-cache-tests) the way its own report
// does: required tests only (kind "required" or none), browser-only tests left out, a test
// counted as passed when its result is `true`; the second count also requires every test it
// depends on to pass. Prints errand's counts beside the proxies' results shipped with the
// suite, then the required tests errand fails.
//
// Usage: node conformance-score.mjs SUITE_DIR ERRAND_RESULTS.json
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, errandFile] = process.argv.slice(2)
const load = async rel => (await import(pathToFileURL(path.join(suiteDir, rel)).href)).default
const suites = await load('tests/index.mjs')
const vendors = await load('results/index.mjs')

const tests = new Map()
for (const suite of suites) {
  for (const test of suite.tests) {
    if (test.browser_only === true) continue
    tests.set(test.id, { ...test, suite: suite.name })
  }
}
const required = [...tests.values()].filter(t => t.kind === undefined || t.kind === 'required')

function score (results) {
  const passes = id => results[id] === true
  const memo = new Map()
  const honoured = id => {
    if (memo.has(id)) return memo.get(id)
    memo.set(id, false)
    const test = tests.get(id)
    const ok = passes(id) && (test?.depends_on ?? []).every(honoured)
    memo.set(id, ok)
    return ok
  }
  return {
    passed: required.filter(t => passes(t.id)).length,
    honoured: required.filter(t => honoured(t.id)).length
  }
}

const errand = JSON.parse(fs.readFileSync(errandFile, 'utf8'))
const rows = [['errand', score(errand)]]
for (const vendor of vendors) {
  if (vendor.type !== 'rev-proxy' && vendor.type !== 'cdn') continue
  const results = JSON.parse(fs.readFileSync(path.join(suiteDir, 'results', vendor.file), 'utf8'))
  rows.push([`${vendor.name} ${vendor.version ?? ''}`.trim(), score(results)])
}
console.log(`required tests: ${required.length}`)
console.log('| cache | passed | passed, dependencies honoured |')
console.log('|---|---|---|')
for (const [name, s] of rows) console.log(`| ${name} | ${s.passed} | ${s.honoured} |`)
console.log('\nrequired tests errand fails:')
for (const test of required) {
  if (errand[test.id] === true) continue
  const why = errand[test.id] === undefined ? 'not run' : JSON.stringify(errand[test.id]).slice(0, 160)
  console.log(`- ${test.id} (${test.suite}): ${why}`)
}
