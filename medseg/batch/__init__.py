"""medseg.batch"""
