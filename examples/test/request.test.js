// The sample client's request wrapper, with wx and the API faked in memory:
// node --test examples/test/
const test = require('node:test');
const assert = require('node:assert');

function setup(handler) {
  const storage = new Map();
  const calls = [];
  let codes = 0;
  global.getApp = () => ({ globalData: { apiBase: 'https://api.test' } });
  global.wx = {
    login: ({ success }) => success({ code: 'code' + ++codes }),
    getStorageSync: (k) => storage.get(k) || '',
    setStorageSync: (k, v) => storage.set(k, v),
    removeStorageSync: (k) => storage.delete(k),
    request: ({ url, method, data, header, success }) => {
      const call = { path: url.replace('https://api.test', ''), method, data, auth: header.Authorization };
      calls.push(call);
      const [statusCode, body] = handler(call, calls);
      setImmediate(() => success({ statusCode, data: body }));
    },
  };
  delete require.cache[require.resolve('../miniprogram/utils/request.js')];
  return { api: require('../miniprogram/utils/request.js'), calls, storage };
}

const err = (code) => ({ error: { code, message: code } });

test('logs in first, then sends the token', async () => {
  const { api, calls } = setup((call) =>
    call.path === '/login' ? [200, { token: 'T1', openid: 'o1', expires_in: 60 }] : [200, { valid: true }]
  );
  assert.deepStrictEqual(await api.request('GET', '/session'), { valid: true });
  assert.deepStrictEqual(calls.map((c) => c.path), ['/login', '/session']);
  assert.strictEqual(calls[0].data.code, 'code1');
  assert.strictEqual(calls[1].auth, 'Bearer T1');
});

test('a stale token logs in again once', async () => {
  let tokens = 0;
  const { api, calls, storage } = setup((call) => {
    if (call.path === '/login') return [200, { token: 'T' + ++tokens }];
    return call.auth === 'Bearer T1' ? [200, { openGId: 'G' }] : [401, err('invalid_token')];
  });
  storage.set('wxa_token', 'old');
  assert.deepStrictEqual(await api.request('POST', '/share-info', {}), { openGId: 'G' });
  assert.deepStrictEqual(calls.map((c) => c.path), ['/share-info', '/login', '/share-info']);
});

test('a rotated session key logs in again and the data is asked for again', async () => {
  let logins = 0;
  const { api, calls } = setup((call) => {
    if (call.path === '/login') return [200, { token: 'T' + ++logins }];
    // The server revoked T1 when it found its key stale; T2 holds the new key.
    return call.auth === 'Bearer T2' && call.data.encryptedData === 'new' ? [200, { total: 42 }] : [401, err('session_key_expired')];
  });
  let asked = 0;
  const result = await api.sendOpenData('/werun', async () => ({ encryptedData: ++asked > 1 ? 'new' : 'old', iv: 'x' }));
  assert.deepStrictEqual(result, { total: 42 });
  assert.strictEqual(asked, 2);
  assert.deepStrictEqual(calls.map((c) => c.path), ['/login', '/werun', '/login', '/werun']);
});

test('data that does not check out is not retried', async () => {
  const { api, calls } = setup((call) => (call.path === '/login' ? [200, { token: 'T' }] : [400, err('invalid_open_data')]));
  await assert.rejects(api.sendOpenData('/werun', async () => ({ encryptedData: 'x', iv: 'y' })), { code: 'invalid_open_data' });
  assert.deepStrictEqual(calls.map((c) => c.path), ['/login', '/werun']);
});

test('logout forgets the token here and on the server', async () => {
  const { api, calls, storage } = setup(() => [204, '']);
  storage.set('wxa_token', 'T9');
  await api.logout();
  assert.strictEqual(storage.has('wxa_token'), false);
  assert.deepStrictEqual(calls.map((c) => [c.path, c.auth]), [['/logout', 'Bearer T9']]);
});

test('a refused login code gets one fresh code', async () => {
  const { api, calls } = setup((call) => {
    if (call.path === '/login') return call.data.code === 'code1' ? [400, err('invalid_login_code')] : [200, { token: 'T' }];
    return [200, {}];
  });
  await api.request('GET', '/session');
  assert.deepStrictEqual(calls.map((c) => c.data && c.data.code).filter(Boolean), ['code1', 'code2']);
});

test('errors reject with the server code', async () => {
  const { api } = setup((call) => (call.path === '/login' ? [200, { token: 'T' }] : [409, err('order_already_paid')]));
  await assert.rejects(api.request('POST', '/pay/sign', { out_trade_no: 'T1' }), { code: 'order_already_paid' });
});
