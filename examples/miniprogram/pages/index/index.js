const api = require('../../utils/request.js');

function show(page, error) {
  page.setData({ error: (error && (error.code + ': ' + (error.message || ''))) || String(error) });
}

function promisify(fn, options) {
  return new Promise((resolve, reject) => fn(Object.assign({}, options, { success: resolve, fail: reject })));
}

Page({
  data: { openid: '', phone: '', steps: null, openGId: '', hasShareTicket: false, outTradeNo: '', error: '' },

  async onLoad() {
    this.setData({ hasShareTicket: !!getApp().globalData.shareTicket });
    try {
      const session = await api.login();
      this.setData({ openid: session.openid });
    } catch (error) {
      show(this, error);
    }
  },

  // Current button: the event carries a code for POST /phone; older clients carry
  // encryptedData + iv instead, which the same route decrypts.
  async onPhoneNumber(event) {
    const detail = event.detail || {};
    if (!detail.code && !detail.encryptedData) return show(this, { code: 'denied', message: detail.errMsg });
    try {
      const body = detail.code ? { code: detail.code } : { encryptedData: detail.encryptedData, iv: detail.iv };
      const phone = await api.request('POST', '/phone', body);
      this.setData({ phone: phone.phoneNumber, error: '' });
    } catch (error) {
      show(this, error);
    }
  },

  async onWeRun() {
    try {
      const result = await api.sendOpenData('/werun', async () => {
        const res = await promisify(wx.getWeRunData);
        return { encryptedData: res.encryptedData, iv: res.iv };
      });
      this.setData({ steps: result.total, error: '' });
    } catch (error) {
      show(this, error);
    }
  },

  async onShareInfo() {
    const shareTicket = getApp().globalData.shareTicket;
    try {
      const result = await api.sendOpenData('/share-info', async () => {
        const res = await promisify(wx.getShareInfo, { shareTicket });
        return { encryptedData: res.encryptedData, iv: res.iv };
      });
      this.setData({ openGId: result.openGId, error: '' });
    } catch (error) {
      show(this, error);
    }
  },

  onOrderInput(event) {
    this.setData({ outTradeNo: event.detail.value });
  },

  // The order and its amount live on the server; the client only names it.
  async onPay() {
    try {
      const params = await api.request('POST', '/pay/sign', { out_trade_no: this.data.outTradeNo });
      await promisify(wx.requestPayment, params);
      // Payment is final once POST /pay/notify marks the order PAID: ask your order system.
      wx.showToast({ title: 'Paid' });
      this.setData({ error: '' });
    } catch (error) {
      show(this, error);
    }
  },
});
