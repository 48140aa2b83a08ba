// The API URL printed by `sam deploy` (Outputs: ApiUrl), without a trailing slash. Add its host to
// the mini-program's "request legal domains" in the WeChat console.
const API_BASE = 'https://abcdef1234.execute-api.ap-east-1.amazonaws.com';

App({
  globalData: { apiBase: API_BASE, shareTicket: null },

  onLaunch(options) {
    // Opened from a group share: keep the ticket for wx.getShareInfo.
    if (options && options.shareTicket) this.globalData.shareTicket = options.shareTicket;
  },

  onShow(options) {
    if (options && options.shareTicket) this.globalData.shareTicket = options.shareTicket;
  },
});
