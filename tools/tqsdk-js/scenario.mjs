// The real tqsdk npm client 1.3.1 ("tqsdk-js"), unmodified, against a running qaexchange server:
// instruments file, quote, login, an order that crosses another account's resting order (placed
// over REST) and fills, position and account equal to REST's views, k-lines, a resting order
// cancelled, and a wrong password that gets an ERROR notify and no trade tree.
//
//   node tools/tqsdk-js/scenario.mjs --http http://127.0.0.1:8080 --ws ws://127.0.0.1:8081
//
// Options (or environment): --http (QAEX_HTTP), --ws (QAEX_WS), --symbol (QAEX_SYMBOL, default
// SHFE.cu2501), --timeout seconds per wait (QAEX_TIMEOUT, default 10), --frames FILE (every
// WebSocket frame sent and received, one JSON line each). Exits 0 after "scenario: all N steps
// passed"; on a failure prints "FAIL: ..." with the last frames and exits 1.
//
// tqsdk-js is written for browsers. Under Node it gets from the outside, through its own
// constructor options, what a browser would give it: `WebSocket` (the `ws` package, the way
// tqsdk's own tqsdk_node_test.js does it) and `requestMethod` (its HTTP GET hook; the default is
// the global `fetch`, which Node 20 has). The hook is needed because tqsdk reads the broker list
// from a fixed URL, https://files.shinnytech.com/broker-list.json, and takes the trading
// WebSocket's URL from it: here the list is answered locally ({"local": {"url": <td url>}}), and
// every other URL must be on the server under test. Nothing of tqsdk itself is changed.

import { createRequire } from 'node:module'
import { writeFileSync } from 'node:fs'
import WebSocket from 'ws'

const require = createRequire(import.meta.url)
// The Node build tqsdk documents (tqsdk_node_test.js): UMD, without the browser cache
// (localforage/IndexedDB). The same code as the package's ESM entry, dist/esm/tqsdk.js.
const TQSDK = require('tqsdk/dist/umd/tqsdk-nocache.js')
const TQSDK_VERSION = require('tqsdk/package.json').version

const BROKER_LIST_URL = 'https://files.shinnytech.com/broker-list.json'
const BID = 'local'

// ---------------------------------------------------------------- arguments

function parseArgs (argv) {
  const opts = {
    http: process.env.QAEX_HTTP || '',
    ws: process.env.QAEX_WS || '',
    symbol: process.env.QAEX_SYMBOL || 'SHFE.cu2501',
    timeout: Number(process.env.QAEX_TIMEOUT || 10),
    frames: process.env.QAEX_FRAMES || ''
  }
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '')
    if (key === 'help' || key === 'h') {
      console.log('usage: node scenario.mjs --http http://HOST:PORT --ws ws://HOST:PORT [--symbol EXCH.sym] ' +
        '[--timeout seconds] [--frames FILE]')
      process.exit(0)
    }
    if (!(key in opts) || i + 1 >= argv.length) usage(`unknown or incomplete option ${argv[i]}`)
    opts[key] = argv[++i]
  }
  if (!opts.http || !opts.ws) usage('--http and --ws are required')
  if (!/^[a-z]+:\/\//.test(opts.http)) opts.http = 'http://' + opts.http
  if (!/^[a-z]+:\/\//.test(opts.ws)) opts.ws = 'ws://' + opts.ws
  opts.http = opts.http.replace(/\/+$/, '')
  opts.ws = opts.ws.replace(/\/+$/, '')
  opts.timeout = Number(opts.timeout)
  if (!(opts.timeout > 0)) usage('--timeout must be a positive number of seconds')
  if (!/^[A-Z]+\.[A-Za-z0-9]+$/.test(opts.symbol)) usage(`--symbol must be EXCHANGE.symbol, not ${opts.symbol}`)
  return opts
}

function usage (msg) {
  console.error(`scenario.mjs: ${msg}`)
  process.exit(2)
}

const args = parseArgs(process.argv.slice(2))
const insUrl = `${args.http}/api/market/instruments/shinny`
const mdUrl = `${args.ws}/md`
const tdUrl = `${args.ws}/td`
const [EXCH, INS] = args.symbol.split('.')
const WAIT_MS = args.timeout * 1000

// ---------------------------------------------------------------- output

const t0 = Date.now()
let steps = 0
const secs = () => ((Date.now() - t0) / 1000).toFixed(2).padStart(6)
function step (msg) { steps++; console.log(`[${secs()}s] STEP ${steps}: ${msg}`) }
function ok (msg) { console.log(`[${secs()}s]   ok: ${msg}`) }
function info (msg) { console.log(`[${secs()}s]   ${msg}`) }

// Every frame of every connection: [ms since start, connection, '->' or '<-', text].
const frames = []
function dumpFrames () {
  if (args.frames) {
    try {
      writeFileSync(args.frames, frames.map(f => JSON.stringify({ ms: f[0], conn: f[1], dir: f[2], text: f[3] })).join('\n') + '\n')
    } catch (e) {
      console.error(`cannot write ${args.frames}: ${e.message}`)
    }
  }
}

class ScenarioFailure extends Error {}

function fail (msg) {
  throw new ScenarioFailure(msg)
}

// A known way for a server to lose tqsdk-js data: on a trading connection tqsdk-js takes every
// patch of an rtn_data that has a `notify` out of the array (TqTradeWebsocket._separateNotifies)
// and merges only its notify, so whatever else that patch held never reaches its tree.
function notifyHint () {
  const hit = frames.find(([, conn, dir, text]) => dir === '<-' && conn.startsWith('td') && (() => {
    try {
      const m = JSON.parse(text)
      return m.aid === 'rtn_data' && m.data.some(p => p && p.notify && Object.keys(p).length > 1)
    } catch (e) {
      return false
    }
  })())
  if (!hit) return ''
  return `\n  (server-side: ${hit[1]} got, at ${hit[0]} ms, an rtn_data patch holding a notify and other data; ` +
    'tqsdk-js keeps only the notify of such a patch (TqTradeWebsocket._separateNotifies), so the rest never ' +
    'reaches it: the server must send each notify in a patch of its own, e.g. "data":[{"notify":{..}},{"trade":{..}}])'
}

function reportFailure (msg) {
  console.log(`[${secs()}s] FAIL: ${msg}${notifyHint()}`)
  const last = frames.slice(-30)
  console.log(`--- the last ${last.length} of ${frames.length} WebSocket frames (ms, connection, direction) ---`)
  for (const [ms, conn, dir, text] of last) {
    const t = text.length > 1500 ? text.slice(0, 1500) + `... (${text.length} chars)` : text
    console.log(`${String(ms).padStart(6)} ${conn} ${dir} ${t}`)
  }
  dumpFrames()
  process.exit(1)
}

process.on('unhandledRejection', e => reportFailure(`unhandled rejection: ${e && e.stack ? e.stack : e}`))
process.on('uncaughtException', e => reportFailure(`uncaught exception: ${e && e.stack ? e.stack : e}`))

// ---------------------------------------------------------------- what tqsdk is given

// `ws`'s WebSocket, logging every frame; tqsdk uses it through wsOption.WebSocket.
let connSeq = 0
class LoggingWebSocket extends WebSocket {
  constructor (url, ...rest) {
    super(url, ...rest)
    const path = new URL(url).pathname
    this._conn = `${path.replace(/^\//, '') || '/'}#${++connSeq}`
    frames.push([Date.now() - t0, this._conn, '**', `connect ${url}`])
    this.addEventListener('message', e => frames.push([Date.now() - t0, this._conn, '<-', String(e.data)]))
    this.addEventListener('close', e => frames.push([Date.now() - t0, this._conn, '**', `closed ${e.code} ${e.reason}`]))
  }

  send (data, ...rest) {
    frames.push([Date.now() - t0, this._conn, '->', String(data)])
    return super.send(data, ...rest)
  }
}

// tqsdk's HTTP GET hook: the broker list is answered here, everything else must be a URL of the
// server under test.
const requested = []
function requestMethod (url) {
  requested.push(url)
  if (url === BROKER_LIST_URL) return Promise.resolve({ [BID]: { name: BID, url: tdUrl } })
  if (!url.startsWith(args.http + '/')) {
    return Promise.reject(new Error(`tqsdk asked for ${url}, which is not on the server under test`))
  }
  return fetch(url, { headers: { Accept: 'application/json; charset=utf-8' } }).then(res => {
    if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`)
    return res.json()
  })
}

function newTqsdk (autoInit = true) {
  const sdk = new TQSDK({
    symbolsServerUrl: insUrl,
    wsQuoteUrl: mdUrl,
    requestMethod,
    autoInit
  }, {
    WebSocket: LoggingWebSocket,
    reconnectMaxTimes: 1
  })
  sdk.on('error', e => info(`tqsdk error event: ${e && e.message ? e.message : e}`))
  return sdk
}

// ---------------------------------------------------------------- REST

async function rest (method, path, body) {
  const res = await fetch(args.http + path, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined
  })
  const text = await res.text()
  let env
  try {
    env = JSON.parse(text)
  } catch (e) {
    fail(`${method} ${path}: HTTP ${res.status}, not JSON: ${text.slice(0, 500)}`)
  }
  if (res.status !== 200 || !env.success) {
    fail(`${method} ${path} ${body ? JSON.stringify(body) : ''}: HTTP ${res.status} ${text.slice(0, 500)}`)
  }
  return env.data
}

// ---------------------------------------------------------------- waiting and comparing

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// Polls cond() every 20 ms (tqsdk updates its objects in place as frames arrive) until it is
// true; fails after `ms` with what was seen.
async function waitFor (what, cond, state, ms = WAIT_MS) {
  const end = Date.now() + ms
  for (;;) {
    let v
    try {
      v = cond()
    } catch (e) {
      v = false
    }
    if (v) return v
    if (Date.now() >= end) {
      fail(`${what}: not within ${(ms / 1000).toFixed(1)} s` + (state ? `; seen: ${state()}` : ''))
    }
    await sleep(20)
  }
}

function plain (obj) {
  if (obj === null || obj === undefined) return obj
  return JSON.parse(JSON.stringify(obj))
}

const dump = obj => JSON.stringify(plain(obj))

function sameNumber (a, b) {
  if (typeof a !== 'number' || typeof b !== 'number' || Number.isNaN(a) || Number.isNaN(b)) return false
  return Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(a), Math.abs(b))
}

// [[key, REST value, tqsdk value]] over REST's numeric fields.
function differences (restObj, tq) {
  const diffs = []
  for (const [k, v] of Object.entries(restObj)) {
    if (typeof v !== 'number') continue
    const tv = tq && k in tq ? tq[k] : '<absent>'
    if (!sameNumber(v, tv)) diffs.push([k, v, tv])
  }
  return diffs
}

const numericCount = obj => Object.values(obj).filter(v => typeof v === 'number').length

// tqsdk's account == GET /api/account/<user> (allowing a push a moment to arrive).
async function compareAccount (sdk, acct, when) {
  const account = sdk.getAccount(acct)
  const end = Date.now() + WAIT_MS
  for (;;) {
    const r = await rest('GET', `/api/account/${acct.user_id}`)
    const d = differences(r, account)
    if (d.length === 0) {
      ok(`account ${when} == REST (${numericCount(r)} numeric fields; balance ${r.balance} available ${r.available} ` +
        `margin ${r.margin} frozen_margin ${r.frozen_margin} commission ${r.commission})`)
      return r
    }
    if (Date.now() >= end) {
      fail(`account ${when}: tqsdk != REST: ${d.map(([k, a, b]) => `${k} (REST ${a}, tqsdk ${b})`).join(', ')}\n` +
        `  REST:  ${JSON.stringify(r)}\n  tqsdk: ${dump(account)}`)
    }
    await sleep(100)
  }
}

// tqsdk's position == the row of GET /api/position/<user> (allowing a push a moment to arrive).
async function comparePosition (sdk, acct, symbol, when) {
  const end = Date.now() + WAIT_MS
  for (;;) {
    const pos = sdk.getPosition(Object.assign({ symbol }, acct))
    const rows = await rest('GET', `/api/position/${acct.user_id}`)
    const row = rows.find(p => `${p.exchange_id}.${p.instrument_id}` === symbol)
    if (!row) fail(`GET /api/position/${acct.user_id} has no ${symbol}: ${JSON.stringify(rows)}`)
    const d = differences(row, pos)
    if (d.length === 0) {
      ok(`position ${symbol} ${when} == REST (${numericCount(row)} numeric fields; volume_long ${row.volume_long} ` +
        `pos_long_today ${row.pos_long_today} margin ${row.margin})`)
      return row
    }
    if (Date.now() >= end) {
      fail(`position ${symbol} ${when}: tqsdk != REST: ${d.map(([k, a, b]) => `${k} (REST ${a}, tqsdk ${b})`).join(', ')}\n` +
        `  REST:  ${JSON.stringify(row)}\n  tqsdk: ${dump(pos)}`)
    }
    await sleep(100)
  }
}

// ---------------------------------------------------------------- the scenario

async function main () {
  console.log(`tqsdk-js ${TQSDK_VERSION} (${TQSDK.version}), node ${process.version}; http ${args.http}, ` +
    `md ${mdUrl}, td ${tdUrl}, symbol ${args.symbol}, waits ${args.timeout} s`)
  if (TQSDK_VERSION !== '1.3.1') fail(`tqsdk ${TQSDK_VERSION} is installed, this scenario is for 1.3.1 (npm ci)`)

  const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`.slice(-8)
  const user = `js${tag}`
  const maker = `jsm${tag}`
  const password = `pw-${tag}`

  step(`REST: open ${user} (password) and ${maker} (the other side)`)
  await rest('POST', '/api/account/open', { account_id: user, init_cash: 1000000, password })
  await rest('POST', '/api/account/open', { account_id: maker, init_cash: 1000000, password: `${password}-m` })
  ok('accounts opened')

  step('new TQSDK: instruments file over HTTP, md WebSocket, broker list')
  const sdk = newTqsdk()
  const notifies = []
  sdk.on('notify', n => {
    notifies.push(n)
    info(`notify ${n.level} ${n.code} ${n.user_id}: ${n.content}`)
  })
  let ready = false
  let brokers = null
  sdk.on('ready', () => { ready = true })
  sdk.on('rtn_brokers', b => { brokers = b })
  await waitFor('tqsdk "ready" (the instruments file loaded)', () => ready,
    () => `requested ${JSON.stringify(requested)}`)
  const info0 = sdk.quotesInfo[args.symbol]
  if (!info0) fail(`the instruments file has no ${args.symbol}: ${Object.keys(sdk.quotesInfo).join(', ')}`)
  for (const k of ['price_tick', 'volume_multiple']) {
    if (!(info0[k] > 0)) fail(`instruments file: ${args.symbol}.${k} is ${info0[k]}: ${JSON.stringify(info0)}`)
  }
  ok(`instruments: ${Object.keys(sdk.quotesInfo).join(', ')}; ${args.symbol} price_tick ${info0.price_tick} ` +
    `volume_multiple ${info0.volume_multiple} class ${info0.class}`)
  await waitFor('tqsdk "rtn_brokers"', () => brokers, () => `requested ${JSON.stringify(requested)}`)
  if (!brokers.includes(BID)) fail(`brokers ${JSON.stringify(brokers)} lack ${BID}`)
  ok(`brokers ${JSON.stringify(brokers)}`)

  step(`getQuote(${args.symbol}) until it has a datetime`)
  const quote = sdk.getQuote(args.symbol)
  if (!quote || typeof quote !== 'object' || !('price_tick' in quote)) {
    fail(`getQuote returned ${dump(quote)}`)
  }
  await waitFor(`quote ${args.symbol} datetime`, () => typeof quote.datetime === 'string' && quote.datetime.length > 0,
    () => dump(quote))
  if (quote.instrument_id !== args.symbol) fail(`quote.instrument_id ${quote.instrument_id}, wanted ${args.symbol}`)
  const tick = quote.price_tick
  const preSettlement = quote.pre_settlement
  if (!(preSettlement > 0)) fail(`quote ${args.symbol} pre_settlement ${preSettlement}: ${dump(quote)}`)
  if (!(quote.upper_limit > preSettlement && quote.lower_limit < preSettlement)) {
    fail(`quote ${args.symbol}: band ${quote.lower_limit}..${quote.upper_limit} around ${preSettlement}`)
  }
  ok(`quote datetime ${JSON.stringify(quote.datetime)} pre_settlement ${preSettlement} band ` +
    `${quote.lower_limit}..${quote.upper_limit} last_price ${JSON.stringify(quote.last_price)} volume ${quote.volume}`)

  step(`login: bid ${JSON.stringify(BID)} user_name ${user}`)
  const acct = { bid: BID, user_id: user, password }
  const added = sdk.addAccount(acct)
  if (!added || !added.ws) fail(`addAccount returned ${dump(added && { bid: added.bid, user_id: added.user_id })}`)
  sdk.login(acct)
  await waitFor(`isLogined(${user}) (session.trading_day and trade_more_data false)`, () => sdk.isLogined(acct),
    () => dump(sdk.get({ name: 'user', bid: BID, user_id: user })))
  const session = sdk.get({ name: 'session', bid: BID, user_id: user })
  if (!/^\d{8}$/.test(String(session.trading_day))) fail(`session.trading_day ${JSON.stringify(session)}`)
  const loginInfo = notifies.find(n => n.user_id === user && n.level === 'INFO')
  if (!loginInfo) fail(`no INFO notify for the login; notifies: ${JSON.stringify(notifies)}`)
  ok(`logged in; trading_day ${session.trading_day}; notify "${loginInfo.content}"`)
  await compareAccount(sdk, acct, 'after login')
  const errorsBefore = notifies.filter(n => n.level === 'ERROR').length

  const price = preSettlement + 2 * tick
  const vol = 2
  step(`REST: ${maker} rests SELL ${vol} @ ${price}; the quote shows it`)
  const volBefore = typeof quote.volume === 'number' ? quote.volume : 0
  const sell = await rest('POST', '/api/order/submit', {
    account_id: maker, instrument_id: args.symbol, direction: 'SELL', offset: 'OPEN', limit_price: price, volume: vol
  })
  if (sell.order.status !== 'ALIVE' || sell.trades.length) fail(`the SELL did not rest: ${JSON.stringify(sell)}`)
  await waitFor(`quote ask_price1 ${price} x ${vol}`,
    () => sameNumber(quote.ask_price1, price) && quote.ask_volume1 === vol, () => dump(quote))
  ok(`quote ask ${quote.ask_price1} x ${quote.ask_volume1}`)

  step(`insertOrder BUY OPEN ${vol} ${args.symbol} LIMIT ${price} (crosses)`)
  const order = sdk.insertOrder(Object.assign({
    exchange_id: EXCH, instrument_id: INS, direction: 'BUY', offset: 'OPEN', price_type: 'LIMIT', limit_price: price, volume: vol
  }, acct))
  if (!order || !order.order_id) fail(`insertOrder returned ${dump(order)}`)
  const oid = order.order_id
  await waitFor(`order ${oid} FINISHED`, () => order.status === 'FINISHED', () => dump(order))
  if (!order.exchange_order_id) fail(`order ${oid} FINISHED with an empty exchange_order_id (a reject): ${dump(order)}`)
  if (order.volume_left !== 0 || order.volume_orign !== vol) {
    fail(`order ${oid}: volume_left ${order.volume_left} volume_orign ${order.volume_orign}, wanted 0 and ${vol}: ${dump(order)}`)
  }
  for (const [k, want] of [['exchange_id', EXCH], ['instrument_id', INS], ['direction', 'BUY'], ['offset', 'OPEN'],
    ['price_type', 'LIMIT'], ['time_condition', 'GFD'], ['volume_condition', 'ANY']]) {
    if (order[k] !== want) fail(`order ${oid}: ${k} ${JSON.stringify(order[k])}, wanted ${want}: ${dump(order)}`)
  }
  if (!sameNumber(order.limit_price, price) || !(order.insert_date_time > 0)) {
    fail(`order ${oid}: limit_price ${order.limit_price} insert_date_time ${order.insert_date_time}: ${dump(order)}`)
  }
  const fills = Object.values(sdk.getTradesByOrder(Object.assign({ order_id: oid }, acct)))
  const filled = fills.reduce((s, t) => s + t.volume, 0)
  if (!fills.length || filled !== vol || fills.some(t => !sameNumber(t.price, price))) {
    fail(`order ${oid} FINISHED but its trades (matched by the client's order_id) are ${JSON.stringify(plain(fills))}; ` +
      `wanted ${vol} lots at ${price}; all trades: ${dump(sdk.getTrades(acct))}`)
  }
  for (const t of fills) {
    if (t.exchange_id !== EXCH || t.instrument_id !== INS || t.direction !== 'BUY' || t.offset !== 'OPEN' ||
      !(t.trade_date_time > 0) || typeof t.commission !== 'number') {
      fail(`trade fields: ${JSON.stringify(plain(t))}`)
    }
  }
  ok(`order ${oid} FINISHED, exchange_order_id ${order.exchange_order_id}, last_msg ${JSON.stringify(order.last_msg)}; ` +
    `${fills.length} trade(s): ${fills.map(t => `${t.trade_id} ${t.volume}@${t.price}`).join(', ')}`)
  await waitFor(`quote last_price ${price} and volume +${vol}`,
    () => sameNumber(quote.last_price, price) && quote.volume === volBefore + vol, () => dump(quote))
  ok(`quote last_price ${quote.last_price} volume ${quote.volume}`)

  step('position and account == REST')
  const pos = sdk.getPosition(Object.assign({ symbol: args.symbol }, acct))
  if (!pos) fail(`no position ${args.symbol}: ${dump(sdk.getPositions(acct))}`)
  const row = await comparePosition(sdk, acct, args.symbol, 'after the fill')
  if (row.volume_long !== vol || (pos.pos_long_today + pos.pos_long_his) !== vol) {
    fail(`position ${args.symbol}: volume_long ${row.volume_long}, pos_long ${pos.pos_long_today}+${pos.pos_long_his}, wanted ${vol}`)
  }
  const accAfter = await compareAccount(sdk, acct, 'after the fill')
  if (!(accAfter.margin > 0) || !(accAfter.commission > 0)) fail(`account after the fill: ${JSON.stringify(accAfter)}`)

  step(`setChart ${args.symbol} 1 min: the bar of the fill`)
  const dur = 60e9
  const chart = sdk.setChart({ chart_id: 'js_chart', symbol: args.symbol, duration: dur, view_width: 10 })
  await waitFor('chart right_id >= 0 and more_data false', () => chart.right_id >= 0 && chart.more_data === false,
    () => dump(chart))
  const klines = sdk.getKlines(args.symbol, dur)
  await waitFor('klines last_id >= 0 with its bar', () => klines.last_id >= 0 && klines.data[klines.last_id],
    () => dump(klines))
  const bar = klines.data[klines.last_id]
  if (!sameNumber(bar.close, price) || !(bar.volume >= vol) || !(bar.datetime > 0)) {
    fail(`the last 1-min bar: ${JSON.stringify(plain(bar))}; wanted close ${price}, volume >= ${vol}`)
  }
  ok(`chart left_id ${chart.left_id} right_id ${chart.right_id}; klines last_id ${klines.last_id}: ` +
    `${JSON.stringify(plain(bar))}`)

  const restPrice = preSettlement - 5 * tick
  step(`insertOrder BUY OPEN 1 LIMIT ${restPrice} (rests), then cancelOrder`)
  const accBeforeRest = await rest('GET', `/api/account/${user}`)
  const live = sdk.insertOrder(Object.assign({
    exchange_id: EXCH, instrument_id: INS, direction: 'BUY', offset: 'OPEN', price_type: 'LIMIT', limit_price: restPrice, volume: 1
  }, acct))
  const lid = live.order_id
  await waitFor(`order ${lid} accepted (ALIVE with an exchange_order_id)`,
    () => live.status === 'ALIVE' && live.exchange_order_id, () => dump(live))
  const restOrders = await rest('GET', `/api/order/user/${user}`)
  const restLive = restOrders.find(o => o.client_order_id === lid)
  if (!restLive || restLive.status !== 'ALIVE') {
    fail(`GET /api/order/user/${user} does not show ${lid} ALIVE: ${JSON.stringify(restOrders)}`)
  }
  await waitFor(`quote bid_price1 ${restPrice}`, () => sameNumber(quote.bid_price1, restPrice), () => dump(quote))
  const acctLive = await compareAccount(sdk, acct, 'with the resting order')
  if (!(acctLive.frozen_margin > 0)) fail(`frozen_margin ${acctLive.frozen_margin} with a live order`)
  ok(`order ${lid} ALIVE, exchange_order_id ${live.exchange_order_id}; REST order ${restLive.order_id} ALIVE`)
  sdk.cancelOrder(Object.assign({ order_id: lid }, acct))
  await waitFor(`order ${lid} FINISHED after cancelOrder`, () => live.status === 'FINISHED', () => dump(live))
  if (live.volume_left !== 1) fail(`cancelled order ${lid}: volume_left ${live.volume_left}: ${dump(live)}`)
  if (Object.keys(sdk.getTradesByOrder(Object.assign({ order_id: lid }, acct))).length) {
    fail(`cancelled order ${lid} has trades: ${dump(sdk.getTrades(acct))}`)
  }
  const restCancelled = (await rest('GET', `/api/order/user/${user}`)).find(o => o.client_order_id === lid)
  if (!restCancelled || restCancelled.status === 'ALIVE') fail(`REST still shows ${lid}: ${JSON.stringify(restCancelled)}`)
  const accCancelled = await compareAccount(sdk, acct, 'after the cancel')
  if (!sameNumber(accCancelled.frozen_margin, accBeforeRest.frozen_margin) ||
    !sameNumber(accCancelled.available, accBeforeRest.available)) {
    fail(`after the cancel: frozen_margin ${accCancelled.frozen_margin} available ${accCancelled.available}, ` +
      `before the order ${accBeforeRest.frozen_margin} ${accBeforeRest.available}`)
  }
  ok(`order ${lid} FINISHED, last_msg ${JSON.stringify(live.last_msg)}; REST status ${restCancelled.status}`)
  const errors = notifies.filter(n => n.level === 'ERROR').slice(errorsBefore)
  if (errors.length) fail(`ERROR notifies while trading: ${JSON.stringify(errors)}`)

  const badPrice = quote.upper_limit + 10 * tick
  step(`insertOrder BUY OPEN 1 LIMIT ${badPrice} (above the upper limit): refused`)
  const refused = sdk.insertOrder(Object.assign({
    exchange_id: EXCH, instrument_id: INS, direction: 'BUY', offset: 'OPEN', price_type: 'LIMIT', limit_price: badPrice, volume: 1
  }, acct))
  const rid = refused.order_id
  await waitFor(`refused order ${rid} FINISHED`, () => refused.status === 'FINISHED', () => dump(refused))
  if (refused.exchange_order_id !== '' || !/code \d+/.test(String(refused.last_msg))) {
    fail(`refused order ${rid}: wanted exchange_order_id "" and the reason with its code in last_msg: ${dump(refused)}`)
  }
  const rejectNotify = await waitFor('an ERROR notify for the refused order',
    () => notifies.slice(errorsBefore).find(n => n.level === 'ERROR'), () => JSON.stringify(notifies))
  if (!String(refused.last_msg).includes(`code ${rejectNotify.code}`)) {
    fail(`the notify's code ${rejectNotify.code} is not the one in last_msg ${JSON.stringify(refused.last_msg)}`)
  }
  ok(`order ${rid} FINISHED, exchange_order_id "", last_msg ${JSON.stringify(refused.last_msg)}; notify ERROR ` +
    `${rejectNotify.code}`)
  await compareAccount(sdk, acct, 'after the refused order')

  step(`wrong password for ${user} on a second TQSDK: an ERROR notify, no trade tree`)
  const sdk2 = newTqsdk(false)
  sdk2.initTdWebsocket()
  const notifies2 = []
  sdk2.on('notify', n => {
    notifies2.push(n)
    info(`(second client) notify ${n.level} ${n.code} ${n.user_id}: ${n.content}`)
  })
  let brokers2 = null
  sdk2.on('rtn_brokers', b => { brokers2 = b })
  await waitFor('second client "rtn_brokers"', () => brokers2)
  const bad = { bid: BID, user_id: user, password: password + 'x' }
  sdk2.login(bad)
  const err = await waitFor('an ERROR notify for the wrong password',
    () => notifies2.find(n => n.level === 'ERROR'), () => JSON.stringify(notifies2))
  await sleep(500) // anything the server would send after the notify
  if (sdk2.isLogined(bad)) fail('the wrong password logged in')
  const tree = plain(sdk2.get({ name: 'user', bid: BID, user_id: user }))
  // What addAccount put there itself: empty accounts/CNY, trades, positions, orders.
  const acc2 = tree && tree.accounts && tree.accounts.CNY
  if (!tree || tree.session || tree.trade_more_data !== undefined || (acc2 && Object.keys(acc2).length) ||
    Object.keys(tree.orders || {}).length || Object.keys(tree.trades || {}).length ||
    Object.keys(tree.positions || {}).length) {
    fail(`the wrong password got a trade tree: ${JSON.stringify(tree)}`)
  }
  ok(`ERROR notify code ${err.code}: ${JSON.stringify(err.content)}; no session, account, orders, trades or positions`)
  if (!sdk.isLogined(acct)) fail('the first session lost its login')
  sdk2.removeAccount(bad)

  step('close')
  sdk.removeAccount(acct)
  sdk.quotesWs.close()
  ok(`frames: ${frames.filter(f => f[2] === '->').length} sent, ${frames.filter(f => f[2] === '<-').length} received`)
  dumpFrames()
  console.log(`[${secs()}s] scenario: all ${steps} steps passed`)
}

main().then(() => process.exit(0), e => {
  if (e instanceof ScenarioFailure) reportFailure(e.message)
  reportFailure(e && e.stack ? e.stack : String(e))
})
