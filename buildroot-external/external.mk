include $(sort $(wildcard $(BR2_EXTERNAL_PROXYHA_PATH)/package/*/*.mk))
