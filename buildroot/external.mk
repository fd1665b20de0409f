include $(sort $(wildcard $(BR2_EXTERNAL_NORDLYS_PATH)/package/*/*.mk))
