// A wrapper around wx.request for the wxa-serverless API.
// - logs in with wx.login when there is no token, and stores the token;
// - on 401 missing_token / invalid_token: logs in again and retries once;
// - on 401 session_key_expired (the server revoked the session: its key is no longer WeChat's):
//   logs in again, then rejects with { retryWithFreshData: true } so the caller asks WeChat for
//   the data again (the old encryptedData was sealed under a key the server does not hold).
// - 400 invalid_open_data is not retried: the same data would fail again, and every failure
//   costs the session.
// Errors reject with the server's { code, message } (see openapi.yaml).

const TOKEN_KEY = 'wxa_token';

function apiBase() {
  return getApp().globalData.apiBase;
}

function rawRequest(method, path, data, token) {
  return new Promise((resolve, reject) => {
    wx.request({
      url: apiBase() + path,
      method,
      data,
      header: Object.assign(
        { 'content-type': 'application/json' },
        token ? { Authorization: 'Bearer ' + token } : {}
      ),
      success: (res) => resolve(res),
      fail: (err) => reject({ code: 'network_error', message: err.errMsg }),
    });
  });
}

function wxLogin() {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) => (res.code ? resolve(res.code) : reject({ code: 'wx_login_failed', message: res.errMsg })),
      fail: (err) => reject({ code: 'wx_login_failed', message: err.errMsg }),
    });
  });
}

// wx.login -> POST /login -> a stored token. A refused code (invalid_login_code) gets one more try
// with a fresh code: codes are single-use and short-lived.
async function login() {
  for (let attempt = 0; attempt < 2; attempt++) {
    const code = await wxLogin();
    const res = await rawRequest('POST', '/login', { code });
    if (res.statusCode === 200) {
      wx.setStorageSync(TOKEN_KEY, res.data.token);
      return res.data;
    }
    const error = (res.data && res.data.error) || { code: 'http_' + res.statusCode, message: '' };
    if (error.code !== 'invalid_login_code') throw error;
  }
  throw { code: 'invalid_login_code', message: 'login failed twice' };
}

async function request(method, path, data) {
  let token = wx.getStorageSync(TOKEN_KEY);
  if (!token) token = (await login()).token;
  let res = await rawRequest(method, path, data, token);
  let error = res.data && res.data.error;
  if (res.statusCode === 401 && error && (error.code === 'invalid_token' || error.code === 'missing_token')) {
    token = (await login()).token;
    res = await rawRequest(method, path, data, token);
    error = res.data && res.data.error;
  }
  if (res.statusCode >= 200 && res.statusCode < 300) return res.data;
  if (res.statusCode === 401 && error && error.code === 'session_key_expired') {
    await login();
    throw { code: 'session_key_expired', message: error.message, retryWithFreshData: true };
  }
  throw error || { code: 'http_' + res.statusCode, message: '' };
}

// Runs getData() (which asks WeChat for encrypted data) and sends it; asks once more after a
// new login when the server's session key had gone stale.
async function sendOpenData(path, getData) {
  try {
    return await request('POST', path, await getData());
  } catch (error) {
    if (!error.retryWithFreshData) throw error;
    return request('POST', path, await getData());
  }
}

// POST /logout: the server forgets the session; the stored token goes too.
async function logout() {
  const token = wx.getStorageSync(TOKEN_KEY);
  wx.removeStorageSync(TOKEN_KEY);
  if (token) await rawRequest('POST', '/logout', undefined, token);
}

module.exports = { login, logout, request, sendOpenData };
