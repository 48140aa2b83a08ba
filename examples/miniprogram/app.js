// Your API's domain, as `sam deploy` prints it (Outputs: ApiUrl, with the BasePath if you set one),
// without a trailing slash. A mini-program may only call HTTPS domains added to its console
// (Outputs: RequestDomain) and, in mainland China, ICP-filed: the execute-api URL will not do.
const API_BASE = 'https://api.example.com';

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
